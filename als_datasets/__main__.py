from als_datasets.cli import main

main()
