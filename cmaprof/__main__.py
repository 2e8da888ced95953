from cmaprof.cli import main

main()
