from torchkeel.cli import main

main()
