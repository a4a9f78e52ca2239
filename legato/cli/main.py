"""The `legato` command: entry point and error handling.

Every failure the user can cause (bad YAML, unknown entry, bad JSON, unknown workflow, no server)
ends in a one-paragraph message on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from legato.cli.cluster_cmds import cluster
from legato.cli.common import CliError
from legato.cli.kafka_cmds import kafka
from legato.cli.output import ExitCode, error
from legato.cli.process_cmds import process
from legato.cli.run_cmds import bench, run, server, worker
from legato.cli.schema_cmds import schema
from legato.cli.token_cmds import token
from legato.cli.workflow_cmds import workflow
from legato.config import ConfigError
from legato.errors import ServiceError
from legato.load.cli import load


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="WARNING", envvar="LEGATO_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def cli(log_level: str) -> None:
    """Legato: durable Lua workflows."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(server)
cli.add_command(worker)
cli.add_command(run)
cli.add_command(workflow)
cli.add_command(bench)
cli.add_command(schema)
cli.add_command(kafka)
cli.add_command(cluster)
cli.add_command(token)
cli.add_command(load)
cli.add_command(process)


def _entry_error_type() -> tuple[type[BaseException], ...]:
    try:
        from worker.entries import EntryError
    except ImportError:  # pragma: no cover - the worker package is part of the distribution
        return ()
    return (EntryError,)


def undecodable_argument(argv: list[str]) -> str | None:
    """The message for the first argument that is not valid UTF-8 text, or None. Python keeps
    such bytes as lone surrogates ("surrogate escapes"), which no JSON, protobuf or store takes."""
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode()
        except UnicodeEncodeError as e:
            raw = arg.encode(errors="surrogateescape")
            return (f"argument {i} ({raw!r}) is not valid UTF-8 text (byte {e.start}); Legato takes UTF-8 "
                    "only: check the terminal's or the script's encoding")
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    problem = undecodable_argument(args)
    if problem:
        error(problem)
        return ExitCode.ERROR
    try:
        rv = cli.main(args=args, prog_name="legato", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        error("aborted")
        return 130
    except click.ClickException as e:
        e.show()
        return ExitCode.ERROR
    except CliError as e:
        error(str(e))
        return e.exit_code
    except ServiceError as e:
        error(e.message)
        return ExitCode.ERROR
    except ConfigError as e:
        error(str(e))
        return ExitCode.ERROR
    except _entry_error_type() as e:
        error(str(e))
        return ExitCode.ERROR
    except UnicodeError as e:  # text from a file or the environment that is not UTF-8
        error(f"cannot read text that is not valid UTF-8: {e}")
        return ExitCode.ERROR
    except OSError as e:  # an address in use, a file that cannot be read: the message names it
        error(str(e))
        return ExitCode.ERROR
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else ExitCode.OK


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
