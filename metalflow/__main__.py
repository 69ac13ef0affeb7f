from metalflow.cli.main import main

main()
