// Tests share one process and libtorch's thread pool; run classes in sequence so timings and memory stay bounded.
[assembly: DoNotParallelize]
