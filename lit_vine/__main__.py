from lit_vine.cli import main

main()
