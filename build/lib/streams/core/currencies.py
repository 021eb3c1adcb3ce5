"""The ISO 4217 currency codes an order may carry."""

from __future__ import annotations

from typing import Final

# ISO 4217 codes a shop plausibly sells in; an unknown code is far more often a producer bug
# (a symbol, a lower-case typo, a country code) than a new currency.
CURRENCIES: Final[frozenset[str]] = frozenset(
    {
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CHF",
        "CAD",
        "AUD",
        "NZD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "RON",
        "BGN",
        "TRY",
        "ILS",
        "AED",
        "SAR",
        "INR",
        "CNY",
        "HKD",
        "SGD",
        "KRW",
        "TWD",
        "THB",
        "MYR",
        "IDR",
        "PHP",
        "VND",
        "BRL",
        "MXN",
        "ARS",
        "CLP",
        "COP",
        "PEN",
        "ZAR",
        "NGN",
        "EGP",
        "KES",
        "MAD",
        "UAH",
    }
)
