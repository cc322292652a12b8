from kbsync.cli.main import main

main()
