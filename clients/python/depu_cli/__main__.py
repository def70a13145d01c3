from depu_cli.cli import main

main(prog_name="depu")
