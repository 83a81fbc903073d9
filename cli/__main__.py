from hyperexport_cli.main import main

main()
