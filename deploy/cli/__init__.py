"""`cellbank`: the operator's command line against a running network (Typer, Rich).

    cellbank login [--username U --password P | --client-id C --client-secret S]
                                                     sign in (a browser, via a printed URL and code)
    cellbank logout                                  forget the sign-in
    cellbank audit verify [--site SITE]              every service's hash chain, per site, held
                                                     against its anchors and Kafka
    cellbank audit log --aggregate ID [--site SITE] [--json]
                                                     who did what, when and why to an aggregate
    cellbank trace --din DIN | --donor ID | --batch ID [--site SITE] [--json]
                                                     lookback: the genealogy down to the recipient
    cellbank replay --site SITE [--verify | --restore]
                                                     rebuild a site from the log
    cellbank watch [--site S] [--type T] [--json]    the network's events as they arrive
    cellbank hla classify [--json] [--reference DIR] ALLELE... | -
                                                     KIR-ligand class of HLA alleles
    cellbank hla show [--site SITE] [--json]         the release each site's matching uses
    cellbank hla approve --site SITE --directory DIR --release R --reason WHY
                                                     move a site to another release (recorded)

Installed by `pip install -e .` ([project.scripts] in pyproject.toml) as `cellbank`, which runs
`main`. It finds the network through an endpoints file (written by `make run`; endpoints.py), so
it needs no flags on a developer machine, and calls it with the access token of whoever signed
in with `cellbank login` (deploy/sign_in.py: cached per user and issuer, renewed with the
refresh token). A command group is a module (audit, hla) with its own `typer.Typer`; a single
command a module with `register(app)`; both are wired in app.py. A command's function only
turns its options into a call of a plain function `(streams, …) -> exit code`.

Exit codes: 0 fine, 1 the answer is bad (a broken audit chain, an unknown aggregate),
2 the question could not be answered (no endpoints file, an unreachable service, not signed in,
a usage error).
"""

from deploy.cli.app import app, main
from deploy.cli.endpoints import NetworkEndpoints, load_endpoints, signed_in_token
from deploy.cli.errors import CliError

__all__ = ["CliError", "NetworkEndpoints", "app", "load_endpoints", "main", "signed_in_token"]
