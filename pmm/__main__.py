from pmm.cli.app import main

main()
