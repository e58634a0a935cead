"""The one error type for configuration problems, from flags or ini files.

Its message always names where the problem is (file:line, or the flag) and the option,
so that a startup failure is one line an operator can act on.
"""


class ConfigError(Exception):
    def __init__(self, message: str, *, option: str | None = None,
                 file: str | None = None, line: int | None = None):
        self.message = message
        self.option = option
        self.file = file
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (f"{self.file}: " if self.file else "")
        option = f"option '{self.option}': " if self.option else ""
        return f"{where}{option}{self.message}"
