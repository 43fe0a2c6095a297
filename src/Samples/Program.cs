System.Console.WriteLine("samples: work in progress");
