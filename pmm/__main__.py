from pmm.cli.entry import main

main()
