#!/usr/bin/env python3
"""Which folders of src/Microsoft.ML.Diffusion use types declared in which other folders (docs/architecture.md).

Usage: python3 build/folder-deps.py [--edges]   (from the repository root; exits 1 when the folders form a cycle)
A type is attributed to the folder of the file that declares it; a file depends on a folder when its code (comments, XML
docs and the text of string literals removed) names a type of that folder. --edges also prints the file and type behind each dependency.
"""
import collections, glob, os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src', 'Microsoft.ML.Diffusion')
os.chdir(root)
files = [f for f in glob.glob('**/*.cs', recursive=True) if not f.startswith(('obj/', 'bin/', 'Properties/'))]
folder = lambda f: f.split('/')[0] if '/' in f else '(root)'
declared = {}
for f in sorted(files):
    for m in re.finditer(r'^(?:public|internal)\s+(?:[a-z]+\s+)*(?:class|enum|record|struct|interface)\s+(\w+)', open(f).read(), re.M):
        # A partial type's parts may sit in several folders (SamplerOptions.Classifier.cs with the surface): its home is the
        # folder of the file named after it.
        if m.group(1) not in declared or os.path.basename(f) == m.group(1) + '.cs':
            declared[m.group(1)] = folder(f)


def strip_strings(code):
    """Blanks the text of string literals (a type named in a message is no dependency) but keeps the holes of interpolated
    strings ({SamplerRegistry.NamesWith(...)} is code)."""
    def blank(m):
        text = m.group(0)
        if not text.startswith('$'):
            return '""'
        return ' '.join(re.findall(r'\{([^{}]*)\}', text))
    return re.sub(r'\$?@?"(?:[^"\\\n]|\\.)*"', blank, code)


deps = collections.defaultdict(collections.Counter)
edges = collections.defaultdict(set)
for f in files:
    code = strip_strings(re.sub(r'//.*', '', open(f).read()))
    # A name after "Type." is a member of that type (SchedulerCapabilities.ClassifierGuidance), not a type of its own.
    names = set()
    for m in re.finditer(r'\b[A-Z]\w+\b', code):
        before = re.search(r'(\w+)\.$', code[max(0, m.start() - 80):m.start()])
        enum_member = re.match(r'[ \t]*(=[^=]|,|\r?\n)', code[m.end():]) and re.search(r'\n[ \t]*$', code[:m.start()])
        if not (before and before.group(1) in declared) and not enum_member:
            names.add(m.group(0))
    for name in names:
        target = declared.get(name)
        if target and target != folder(f):
            deps[folder(f)][target] += 1
            edges[(folder(f), target)].add(f'{f}: {name}')
for a in sorted(deps):
    print(f'{a} -> ' + ', '.join(f'{b} ({n})' for b, n in sorted(deps[a].items())))
    if '--edges' in sys.argv:
        for b in sorted(deps[a]):
            for e in sorted(edges[(a, b)]):
                print(f'    {b}: {e}')

# The folders must form a layering: report any cycle (a use that points back up) and fail.
graph = {a: set(deps[a]) for a in deps}
order, state = [], {}
def visit(node, path):
    state[node] = 'open'
    for nxt in sorted(graph.get(node, ())):
        if state.get(nxt) == 'open':
            cycle = path[path.index(nxt):] + [nxt]
            print('cycle: ' + ' -> '.join(cycle))
            cycles.append(cycle)
        elif nxt not in state:
            visit(nxt, path + [nxt])
    state[node] = 'done'
    order.append(node)
cycles = []
for node in sorted(graph):
    if node not in state:
        visit(node, [node])
if cycles:
    sys.exit(1)
print('no cycles; layers from the bottom: ' + ', '.join(order))
