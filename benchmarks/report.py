"""What every benchmark prints and draws: progress lines, one table printer, rounds that alternate
their contenders, and write_figure (a PNG and its numbers as JSON under benchmarks/figures/)."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURES = Path(__file__).resolve().parent / "figures"
T = TypeVar("T")


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds the tables alone."""
    print(message, file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> None:
    """Columns as wide as their widest cell: the first left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    for row in [list(headers), *cells]:
        first, *rest = row
        print(f"{first:<{widths[0]}}" + "".join(f"  {cell:>{w}}" for cell, w in zip(rest, widths[1:], strict=True)))


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def alternating(
    contenders: Mapping[str, Callable[[], T]], rounds: int, counts: Mapping[str, int] | None = None
) -> dict[str, list[T]]:
    """Each contender once a round (until its own count, if given), every round starting one contender
    later, so a machine that drifts over the run slows all of them alike."""
    names = list(contenders)
    results: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if round_ < (counts or {}).get(name, rounds):
                results[name].append(contenders[name]())
        progress(f"  round {round_ + 1}/{rounds} done")
    return results


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def parser(module: str, description: str) -> tuple[argparse.ArgumentParser, Any]:
    """`python -m module`'s parser and its subcommands (add each with `command`)."""
    made = argparse.ArgumentParser(
        prog=f"python -m {module}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return made, made.add_subparsers(dest="command", required=True, metavar="COMMAND")


def command(
    subparsers: Any, name: str, description: str, run: Callable[[argparse.Namespace], None]
) -> argparse.ArgumentParser:
    """Subcommand `name` running `run`, its description's first line the summary; --figures says where
    its PNG and JSON go."""
    made = subparsers.add_parser(
        name,
        help=description.split("\n")[0],
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    made.add_argument("--figures", type=Path, default=FIGURES, help="folder for the figure and its numbers")
    made.set_defaults(run=run)
    return made


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse the command line and run the subcommand it names."""
    args = parser.parse_args(argv)
    args.run(args)


def axes(columns: int = 1, size: tuple[float, float] = (7, 4.2)) -> tuple[Figure, list[Axes]]:
    """A figure of `columns` side-by-side plots, drawn without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, drawn = plt.subplots(1, columns, figsize=size, squeeze=False)
    return figure, list(drawn[0])


def write_figure(folder: Path, name: str, figure: Figure, numbers: Any) -> Path:
    """`name`.png and the numbers it shows as `name`.json (gitignored) in `folder`; returns the PNG's path."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    (folder / f"{name}.json").write_bytes(orjson.dumps(numbers, option=options, default=float))
    print(f"figure: {path} (numbers: {name}.json)")
    return path


def write_bars(folder: Path, name: str, title: str, unit: str, groups: Mapping[str, Mapping[str, float]]) -> Path:
    """Horizontal bars, one per (group, contender), each group's together; a contender keeps its colour."""
    rows = [(group, contender, value) for group, values in groups.items() for contender, value in values.items()]
    colours = {contender: f"C{i % 10}" for i, contender in enumerate(dict.fromkeys(c for _, c, _ in rows))}
    figure, (plot,) = axes(size=(8, 1.2 + 0.3 * len(rows)))
    positions = [i + list(groups).index(group) * 0.6 for i, (group, _, _) in enumerate(rows)]
    plot.barh(positions, [value for *_, value in rows], color=[colours[contender] for _, contender, _ in rows])
    plot.set_yticks(positions, [f"{group}: {contender}" for group, contender, _ in rows], fontsize=8)
    plot.invert_yaxis()
    plot.set(xlabel=unit, title=title)
    return write_figure(folder, name, figure, groups)
