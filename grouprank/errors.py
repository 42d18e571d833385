"""Errors meant for the user: the CLI prints them as one clear line."""


class UserError(Exception):
    """Bad input or configuration; the message names the file, record and field."""


class InputError(UserError):
    def __init__(self, file: str, record: str | int | None, field: str | None, reason: str):
        self.file, self.record, self.field, self.reason = str(file), record, field, reason
        where = self.file
        if record is not None:
            where += f", {record if isinstance(record, str) else f'record {record}'}"
        if field:
            where += f", field '{field}'"
        super().__init__(f"{where}: {reason}")
