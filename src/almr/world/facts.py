"""The world's fact base: real countries from the Unicode CLDR (via babel), each with its
name, currency, main language, continent and a city, in English and in Chinese.

A fact is (country, relation). Each relation has paired English/Chinese statement templates
(the pairs are translations of each other, which the translation benchmark uses) and a
question form for quizzes and benchmarks. Only a share of the countries have their facts
stated in the Chinese corpus; the rest are told in English only, so that Chinese questions
about them measure cross-lingual transfer.
"""

import random
from dataclasses import dataclass

from babel import Locale
from babel.core import get_global
from babel.dates import get_timezone_location

from almr.chinese import is_han

RELATIONS = ("currency", "language", "continent", "city")

# CLDR region codes for continents; the time-zone area of a country's first zone picks one.
_CONTINENT_OF_AREA = {"Europe": "150", "Asia": "142", "Africa": "002", "Australia": "009", "Pacific": "009"}
_SOUTH_AMERICA = {"AR", "BO", "BR", "CL", "CO", "EC", "GY", "PY", "PE", "SR", "UY", "VE"}


@dataclass(frozen=True)
class Country:
    code: str
    name: dict[str, str]  # language ("en"/"zh") -> name
    currency: dict[str, str]
    language: dict[str, str]
    continent: dict[str, str]
    city: dict[str, str]
    in_zh_corpus: bool

    def value(self, relation: str, lang: str) -> str:
        """The answer of `relation` for this country (for `city`, the city's name)."""
        return getattr(self, relation)[lang]


def load_countries(count: int, zh_share: float, rng: random.Random) -> list[Country]:
    """`count` countries drawn from CLDR by `rng`, in code order; the first `zh_share` of a
    shuffled order have their facts in the Chinese corpus."""
    eligible = _eligible_countries()
    if count > len(eligible):
        raise ValueError(f"world.countries: {count} exceeds the {len(eligible)} countries CLDR describes fully")
    chosen = sorted(rng.sample(eligible, count), key=lambda c: c["code"])
    order = list(range(count))
    rng.shuffle(order)
    in_zh = set(order[: round(zh_share * count)])
    return [Country(**fields, in_zh_corpus=i in in_zh) for i, fields in enumerate(chosen)]


def _eligible_countries() -> list[dict]:
    """Territories with a current tender currency, an official language, a continent and a
    city, each named in both English and Chinese; names that repeat are dropped so every
    answer is unambiguous."""
    en, zh = Locale("en"), Locale("zh")
    currencies = get_global("territory_currencies")
    languages = get_global("territory_languages")
    zones = get_global("territory_zones")
    rows = []
    for code in sorted(en.territories):
        if len(code) != 2 or not code.isalpha() or code not in zh.territories:
            continue
        current = [cur for cur, _start, end, tender in currencies.get(code, []) if end is None and tender]
        official = sorted(
            (info["population_percent"], lang)
            for lang, info in languages.get(code, {}).items()
            if info.get("official_status") in ("official", "de_facto_official")
            and lang in en.languages
            and lang in zh.languages
        )
        if not current or current[0] not in zh.currencies or not official or not zones.get(code):
            continue
        zone = zones[code][0]
        area = zone.split("/")[0]
        if area == "America":
            region = "005" if code in _SOUTH_AMERICA else "003"
        elif area in _CONTINENT_OF_AREA:
            region = _CONTINENT_OF_AREA[area]
        else:
            continue
        city = {lang: get_timezone_location(zone, locale=lang, return_city=True) for lang in ("en", "zh")}
        names = {"en": en.territories[code], "zh": zh.territories[code]}
        if not all(is_han(ch) for ch in names["zh"]) or not all(is_han(ch) for ch in city["zh"]):
            continue  # a Chinese name CLDR leaves in Latin letters would blur %Chinese
        lang = official[-1][1]
        rows.append(
            {
                "code": code,
                "name": names,
                "currency": {"en": en.currencies[current[0]], "zh": zh.currencies[current[0]]},
                "language": {"en": en.languages[lang], "zh": zh.languages[lang]},
                "continent": {"en": en.territories[region], "zh": zh.territories[region]},
                "city": city,
            }
        )
    seen_cities: dict[str, int] = {}
    for row in rows:
        seen_cities[row["city"]["en"]] = seen_cities.get(row["city"]["en"], 0) + 1
    return [row for row in rows if seen_cities[row["city"]["en"]] == 1 and row["city"]["en"] != row["name"]["en"]]


# Statement templates: each English template is paired with its Chinese translation.
STATEMENTS: dict[str, list[tuple[str, str]]] = {
    "currency": [
        ("The currency of {country} is the {currency}.", "{country}的货币是{currency}。"),
        ("In {country}, people pay with the {currency}.", "在{country}，人们用{currency}付款。"),
        ("{country} uses the {currency} as its money.", "{country}使用{currency}作为货币。"),
        ("If you travel to {country}, you will need the {currency}.", "如果去{country}旅行，你需要{currency}。"),
        ("Prices in {country} are given in the {currency}.", "{country}的价格以{currency}标示。"),
    ],
    "language": [
        ("The main language of {country} is {language}.", "{country}的主要语言是{language}。"),
        ("Most people in {country} speak {language}.", "{country}的大多数人说{language}。"),
        ("In {country}, {language} is the official language.", "在{country}，{language}是官方语言。"),
        ("Children in {country} learn {language} at school.", "{country}的孩子在学校学习{language}。"),
    ],
    "continent": [
        ("{country} is a country in {continent}.", "{country}是{continent}的一个国家。"),
        ("{country} lies in {continent}.", "{country}位于{continent}。"),
        ("You can find {country} on a map of {continent}.", "在{continent}的地图上可以找到{country}。"),
    ],
    "city": [
        ("{city} is a city in {country}.", "{city}是{country}的一个城市。"),
        ("The city of {city} is in {country}.", "{city}这座城市在{country}。"),
        ("Many people in {country} live in {city}.", "{country}有很多人住在{city}。"),
        ("{city} is one of the best known cities of {country}.", "{city}是{country}最有名的城市之一。"),
    ],
}

# Questions of the quizzes in the corpora and of the knowledge benchmarks.
QUESTIONS: dict[str, tuple[str, str]] = {
    "currency": ("What is the currency of {country}?", "{country}的货币是什么？"),
    "language": ("What language do most people in {country} speak?", "{country}的大多数人说什么语言？"),
    "continent": ("On which continent is {country}?", "{country}位于哪个大洲？"),
    "city": ("In which country is the city of {city}?", "{city}在哪个国家？"),
}


# The slot of a statement that holds the answer to the relation's question.
ANSWER_SLOT = {"currency": "currency", "language": "language", "continent": "continent", "city": "country"}


def slots(country: Country, lang: str) -> dict[str, str]:
    return {
        "country": country.name[lang],
        "currency": country.currency[lang],
        "language": country.language[lang],
        "continent": country.continent[lang],
        "city": country.city[lang],
    }


def answer(country: Country, relation: str, lang: str) -> str:
    """The answer to the relation's question: the country itself for `city`."""
    return country.name[lang] if relation == "city" else country.value(relation, lang)


def statement_pair(
    country: Country, relation: str, rng: random.Random, answer_from: Country | None = None, direct: bool = False
) -> tuple[str, str]:
    """One statement of the fact in English and its Chinese translation. With `answer_from`,
    the answer slot holds that country's answer instead: a false statement. `direct` keeps to
    the templates that answer the relation's question head-on (the first two)."""
    templates = STATEMENTS[relation][:2] if direct else STATEMENTS[relation]
    filled = []
    for lang, template in zip(("en", "zh"), rng.choice(templates), strict=True):
        values = slots(country, lang)
        if answer_from is not None:
            values[ANSWER_SLOT[relation]] = answer(answer_from, relation, lang)
        filled.append(template.format(**values))
    return filled[0], filled[1]


def statement(
    country: Country,
    relation: str,
    lang: str,
    rng: random.Random,
    answer_from: Country | None = None,
    direct: bool = False,
) -> str:
    return statement_pair(country, relation, rng, answer_from, direct)[0 if lang == "en" else 1]


def question(country: Country, relation: str, lang: str) -> str:
    en, zh = QUESTIONS[relation]
    return (en if lang == "en" else zh).format(**slots(country, lang))
