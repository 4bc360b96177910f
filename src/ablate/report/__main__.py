from ablate.report import main

main()
