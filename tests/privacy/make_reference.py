#!/usr/bin/env python3
"""Writes tests/privacy/reference.json: epsilons computed by Google's dp_accounting, the
values the Rust accountant (services/libs/privacy) must match to 1e-9 relative.

  python3 -m venv /tmp/dp && /tmp/dp/bin/pip install dp-accounting==0.6.0
  /tmp/dp/bin/python tests/privacy/make_reference.py > tests/privacy/reference.json

Each case is a list of sampled-Gaussian steps (q, sigma, count), composed in order by
dp_accounting's RdpAccountant with its default orders, and the (epsilon, order) it
reports at delta. The pld_cases are the same for its PLDAccountant (discretization 1e-4,
the default).
"""

import itertools
import json
import sys
from importlib import metadata

import dp_accounting
from absl import logging as absl_logging
from dp_accounting.pld import pld_privacy_accountant as pld_accountant
from dp_accounting.rdp import rdp_privacy_accountant as rdp

# Orders whose fractional series does not converge are dropped (+inf) with a warning
# each: expected on this grid, and the Rust side reproduces it.
absl_logging.set_verbosity(absl_logging.ERROR)


def epsilon(steps, delta):
    acc = rdp.RdpAccountant()
    for q, sigma, count in steps:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        acc.compose(event, count)
    eps, order = acc.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def pld_epsilon(steps, delta):
    acc = pld_accountant.PLDAccountant()
    for q, sigma, count in steps:
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), count)
    return float(acc.get_epsilon(delta))


def main():
    pld_cases = []
    for q, sigma, count in itertools.product([1.0, 0.1, 0.01], [0.8, 1.1, 2.0], [1, 100, 1000]):
        steps = [(q, sigma, count)]
        pld_cases.append({"steps": steps, "delta": 1e-5, "epsilon": pld_epsilon(steps, 1e-5)})
    for steps in ([(0.01, 1.1, 500), (0.02, 0.9, 200), (1.0, 5.0, 3)], [(0.1, 2.0, 50), (0.05, 1.3, 100)]):
        pld_cases.append({"steps": steps, "delta": 1e-5, "epsilon": pld_epsilon(steps, 1e-5)})
    cases = []
    grid = itertools.product(
        [1.0, 0.1, 0.01, 0.001],
        [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0],
        [1, 10, 100, 1000, 10000],
        [1e-5, 1e-6],
    )
    for q, sigma, count, delta in grid:
        if q * q / (sigma * sigma) < 1e-10:
            continue  # the low orders are rounding noise there (see PRIVACY-NOTES)
        steps = [(q, sigma, count)]
        eps, order = epsilon(steps, delta)
        cases.append({"steps": steps, "delta": delta, "epsilon": eps, "order": order})
    heterogeneous = [
        [(0.01, 1.1, 500), (0.02, 0.9, 200), (1.0, 5.0, 3)],
        [(0.001, 0.6, 10000), (0.1, 2.0, 50)],
        [(0.05, 1.3, 100), (0.05, 1.3, 100), (0.2, 4.0, 10), (0.003, 0.8, 2000)],
        [(1.0, 2.5, 1), (0.5, 1.7, 30), (0.25, 1.2, 60), (0.125, 1.0, 120)],
        [(0.01, 1.0, 1000), (0.01, 2.0, 1000), (0.01, 4.0, 1000)],
    ]
    for steps in heterogeneous:
        for delta in (1e-5, 1e-6):
            eps, order = epsilon(steps, delta)
            cases.append({"steps": steps, "delta": delta, "epsilon": eps, "order": order})
    json.dump(
        {
            "library": f"dp_accounting {metadata.version('dp-accounting')}",
            "scipy": metadata.version("scipy"),
            "command": "python tests/privacy/make_reference.py > tests/privacy/reference.json",
            "cases": cases,
            "pld_cases": pld_cases,
        },
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
