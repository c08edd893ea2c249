"""Limits figures (protocol.md section 8, issue 10): ``limits_sends`` and ``hostile``.

``limits_sends``: acked sends/s (closed loop, as ``throughput``) with every per-user limit
at its default (commands 20/s with a burst of 40, body bytes 65,536/s, reads 50/s, typing
one per 2 s, 20 sockets), beside the same run with every limit off, on ``--limits-pairs``
pairs both sending. Sized so that no user is over a limit: a limit refusing a flood is
what it is for, and would say nothing of what checking it costs; with 500 pairs each user
sends about 10 commands/s here. ``rate_limited`` refusals are counted (the load resends
them after ``retry_after_ms``, as a client should). Row 3 is the ratio, target >= 0.95.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

from bench.fig_chat import chat_run
from bench.harness import Result, Row, counted_runs, value
from bench.options import Options

TARGET_RATIO = 0.95
DEFAULTS = {"DUOLOGUE_RATE": "20", "DUOLOGUE_BURST": "40", "DUOLOGUE_RATE_BYTES": "65536",
            "DUOLOGUE_READ_RATE": "50", "DUOLOGUE_READ_BURST": "100",
            "DUOLOGUE_TYPING_EVERY": "2", "DUOLOGUE_MAX_SOCKETS": "20"}
OFF = {"DUOLOGUE_RATE": "0", "DUOLOGUE_RATE_BYTES": "0", "DUOLOGUE_READ_RATE": "0",
       "DUOLOGUE_TYPING_EVERY": "0", "DUOLOGUE_MAX_SOCKETS": "0"}


async def limits_sends(opts: Options) -> Result:
    result = Result()
    series = {}
    for on in (False, True):
        sized = replace(opts, pairs=opts.limits_pairs,
                        gateway_env=tuple((DEFAULTS if on else OFF).items()))
        series[on] = await counted_runs(
            sized, result, "chat, limits " + ("at their defaults" if on else "off"),
            partial(chat_run, sized, 0.0, sized.pairs),
            lambda r: (f"{r['rate']:,.0f} acked sends/s, exactly-once ok={r['check']['ok']}, "
                       f"rate_limited {r.get('rate_limited', 0)}, cpu={r['cpu']}"))
    rates = {on: [value(r, "rate", ok=r.get("check", {}).get("ok")) for r in runs]
             for on, runs in series.items()}
    plain = Row("", "", rates[False]).median
    pairs = f"{opts.limits_pairs} pairs both sending"
    result.rows += [
        Row(f"acked sends/s, {pairs}, every limit off", "sends/s", rates[False]),
        Row(f"acked sends/s, {pairs}, every limit at its default", "sends/s", rates[True]),
        Row("  limits on / off (median of the runs off)", "x",
            [r / plain if plain else math.nan for r in rates[True]], TARGET_RATIO, digits=2),
        Row("  rate_limited refusals, limits on", "refusals",
            [value(r, "rate_limited") for r in series[True]]),
    ]
    return result


# ---------------------------------------------------------------- a hostile user


KINDS = {"typing", "sync", "oversized", "reconnect"}  # the attacker's (bench.attackload)


def _attacker(opts: Options, port: int) -> dict[str, Any]:
    unknown = set(opts.hostile_kinds.split(",")) - KINDS
    if unknown:
        raise ValueError(f"--hostile-kinds: unknown {sorted(unknown)}; known {sorted(KINDS)}")
    return {"mode": "attack", "port": port, "user": "mallory", "victim": "u0000a",
            "sockets": opts.hostile_sockets, "rate": opts.hostile_rate,
            "kinds": opts.hostile_kinds.split(","),
            "seconds": opts.warmup + opts.duration * 0.6}


async def hostile(opts: Options) -> Result:
    """``hostile``: ``--pairs`` normal pairs sending ``--hostile-send-rate`` sends/s in all
    (open loop), every limit at its default, without and then with one user flooding
    typing (to a normal user), syncs and oversized frames on ``--hostile-sockets`` sockets
    at ``--hostile-rate`` frames/s. Delivery p99 of the normal pairs with ÷ without
    (target <= 2), and the gateway's RSS 2 s after the attacker left against when every
    socket was open (target within 5 %)."""
    result = Result()
    sized = replace(opts, gateway_env=tuple(DEFAULTS.items()))
    series = {}
    for attacked in (False, True):
        beside = partial(_attacker, sized) if attacked else None
        series[attacked] = await counted_runs(
            sized, result, "chat" + (" beside the hostile user" if attacked else ""),
            partial(chat_run, sized, sized.hostile_send_rate, sized.pairs, beside=beside),
            _say_hostile)
    if opts.profile:
        run = await chat_run(sized, sized.hostile_send_rate, sized.pairs, profile=True,
                             beside=partial(_attacker, sized))
        result.notes.append("profiled run beside the hostile user (not counted): "
                            + _say_hostile(run) + "\n" + str(run.get("profile")))
    p99 = {a: [value(r, "delivery_ms", "p99") for r in runs] for a, runs in series.items()}
    plain = Row("", "", p99[False]).median
    beside_runs = series[True]
    result.rows += [
        Row(f"delivery p99, {opts.pairs} pairs at {opts.hostile_send_rate:,.0f} sends/s, "
            "limits at their defaults", "ms", p99[False], lower=True, digits=1),
        Row("  the same beside the hostile user", "ms", p99[True], lower=True, digits=1),
        Row("  with the hostile user / without (median of the runs without)", "x",
            [r / plain if plain else math.nan for r in p99[True]], 2.0, lower=True,
            digits=2),
        Row("  hostile frames/s sent", "frames/s",
            [value(r, "beside", "rate") for r in beside_runs]),
        Row("  gateway RSS after the attacker left / when all were connected", "x",
            [value(r, "beside", "rss_left_kib") / value(r, "beside", "rss_ready_kib")
             for r in beside_runs], 1.05, lower=True, digits=3),
        Row("  normal sends refused rate_limited", "refusals",
            [value(r, "rate_limited") for r in beside_runs]),
    ]
    return result


def _say_hostile(r: dict[str, Any]) -> str:
    said = (f"{r['rate']:,.0f} acked sends/s, delivery p99 {r['delivery_ms']['p99']:.1f} ms, "
            f"exactly-once ok={r['check']['ok']}, rate_limited {r.get('rate_limited', 0)}")
    if "beside" in r:
        b = r["beside"]
        said += (f"; hostile: {b['rate']:,.0f} frames/s {b['sent']}, reopened "
                 f"{b['reopened']}, answers {b['answers']}, RSS {b['rss_ready_kib']} -> "
                 f"{b['rss_left_kib']} KiB")
    return said + f", cpu={r['cpu']}"
