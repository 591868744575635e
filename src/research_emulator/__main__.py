"""`python -m research_emulator`: run the emulator standalone."""

from .cli import emulator_command

if __name__ == "__main__":
    emulator_command(prog_name="python -m research_emulator")
