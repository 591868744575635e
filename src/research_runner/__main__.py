from research_runner.cli import main

main()
