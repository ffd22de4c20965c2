from grinder.cli.main import main

main()
