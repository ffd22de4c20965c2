"""What a strategy's target is: a quote that rests, or a taker order that fills at once and is gone.

A kernel writes one code per target into `out_kind` (int8; grinder.core.strategy). The drivers fill
that buffer with QUOTE before every call, so a kernel that writes nothing there quotes as before.

- QUOTE: a post-only limit order (GTX) at its price. Quotes are diffed against the open orders: one
  that is still a target stays where it is.
- IOC: a limit order, immediate or cancel. It takes the book from the touch up to its price
  (inclusive) level by level, at each level's price, and the rest expires. It is sent once per
  kernel call that asks for it, never diffed and never shown among the open quotes.
- MARKET: the same with no price limit: it takes levels until it is filled or the side runs out.

REDUCE_ONLY, added to IOC or MARKET, is the exchange's reduce-only flag: the order never increases
the position. The venue cuts it to the position it holds when it arrives, and refuses it when there
is nothing on the other side to reduce. Reduce-only orders are exempt from the minimum notional, as
on Binance futures.
"""

from __future__ import annotations

QUOTE, IOC, MARKET = 0, 1, 2
KIND_MASK = 3  # the bits naming the kind; REDUCE_ONLY is above them
REDUCE_ONLY = 4
KIND_NAMES = {QUOTE: "quote", IOC: "ioc", MARKET: "market"}
# The level id of the gates' flatten orders (grinder.core.gates.flatten_order), carried into their fills.
FLATTEN_LEVEL = -(2**31)


def describe(code: int) -> str:
    """A target's kind code as words, e.g. "ioc reduce-only" (for errors and logs)."""
    name = KIND_NAMES.get(code & KIND_MASK, f"unknown kind {code & KIND_MASK}")
    return f"{name} reduce-only" if code & REDUCE_ONLY else name
