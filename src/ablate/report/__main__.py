from ablate.report.build import main

main()
