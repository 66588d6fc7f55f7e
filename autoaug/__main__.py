from autoaug.cli import main

main()
