from metalflow.cli import main

main()
