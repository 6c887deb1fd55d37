using DEngine.Cli;

// The `dengine` command-line client. Exit codes: 0 success, 1 not found, 2 any error.
return await DEngineCommandLine.RunAsync(args);
