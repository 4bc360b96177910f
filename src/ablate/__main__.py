from ablate.run.cli import main

main()
