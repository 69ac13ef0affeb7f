import sys

if sys.argv[1:2] == ["agent"]:  # the ramdisk's agent: only what it imports (metalflow/cli/agent.py)
    from metalflow.cli.agent import main
else:
    from metalflow.cli.main import main

main()
