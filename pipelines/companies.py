"""Sync several Pipedrive companies, one after another: each into its own pipeline and dataset.

    python pipelines/companies.py                      # every company in `[pipedrive] companies`
    python pipelines/companies.py acme globex --quiet  # these; other flags go to pipedrive_pipeline.py

Company `acme` syncs with pipeline and dataset `pipedrive_acme`, its settings looked up under the pipeline's
name first (`[pipedrive_acme.sources.pipedrive]` in .dlt/secrets.toml, or the environment variable
`PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__API_TOKEN`; never the credentials of `[sources.pipedrive]`); see
`pipedrive_source/deployment.py`. Each company is a run of `pipedrive_pipeline.py` with its summary; one
company failing does not stop the others.
Exit code: 0 if all succeeded, else the first failure's code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pipedrive_pipeline  # noqa: E402

from pipedrive_source.deployment import Company, check_credentials, configured_companies  # noqa: E402
from pipedrive_source.errors import ConfigError  # noqa: E402

NOT_PASSED_ON = ("--pipeline-name", "--dataset", "--demo")  # set per company here
FLAGS_HELP = (
    "Flags: those of pipelines/pipedrive_pipeline.py (its --help lists them), but for "
    f"{', '.join(NOT_PASSED_ON)}, which are set per company."
)


def split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Company names (leading words without a dash) and the flags for the pipeline script."""
    names: list[str] = []
    rest = list(argv)
    while rest and not rest[0].startswith("-"):
        names.append(rest.pop(0))
    return names, rest


def main(argv: Sequence[str] | None = None) -> int:
    names, flags = split_args(sys.argv[1:] if argv is None else argv)
    pipedrive_pipeline.read_settings_of_this_checkout()  # before the companies are read from .dlt/
    if any(flag.split("=")[0] in NOT_PASSED_ON for flag in flags):
        print(f"error: {', '.join(NOT_PASSED_ON)} are set per company", file=sys.stderr)
        return pipedrive_pipeline.EXIT_CONFIG
    if any(flag in ("-h", "--help") for flag in flags):
        print(__doc__.strip(), FLAGS_HELP, sep="\n\n")
        return pipedrive_pipeline.EXIT_OK
    # before the first company: argparse exits, so a flag it cannot read (or --help) ended the whole run
    # inside the first company's run, under its header, and the other companies were never tried
    pipedrive_pipeline.parse_args(flags)
    try:
        companies = [Company(name) for name in names] if names else configured_companies()
    except ConfigError as exc:
        return pipedrive_pipeline.report_failure(exc, verbose=False)
    first_failure = pipedrive_pipeline.EXIT_OK
    for company in companies:
        print(f"== company {company.name}: pipeline and dataset {company.pipeline_name}", flush=True)
        args = [*flags, "--pipeline-name", company.pipeline_name, "--dataset", company.dataset_name]
        code = credentials_error(company) or pipedrive_pipeline.main(args)
        print(f"== company {company.name}: {'ok' if code == 0 else f'failed (exit {code})'}", flush=True)
        if code and not first_failure:
            first_failure = code
    return first_failure


def credentials_error(company: Company) -> int:
    """EXIT_CONFIG, with its one line, if the company has no credentials of its own (see
    `check_credentials`), else 0."""
    try:
        check_credentials(company)
    except ConfigError as exc:
        return pipedrive_pipeline.report_failure(exc, verbose=False)
    return pipedrive_pipeline.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
