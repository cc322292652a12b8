"""A Wikidata-shaped KB of real changes (heads of state and government, CEOs, chairs, coaches,
clubs, directors, officeholders), assembled by hand from public knowledge.

Facts as of **2025-06-01** (``AS_OF``). Each entry names the English Wikipedia article it was
taken from (dates as given there; a date known only to the month or year is written with
day 01). Entity ids are minted (Q92000001..), not real Wikidata QIDs. The shapes follow
Wikidata: p:/ps: statements, pq:P580 start / pq:P582 end, ranks (the current holder of a
head of state or an office is preferred, as Wikidata usually marks it; every other
statement is normal rank, so only end times tell who left), labels and a few aliases.

Used by benchmarks/real_changes.py and benchmarks/relation_prompts.py:
    write_kb(path)  -> the Turtle file;  CHANGES  -> the table;  current(entry) -> holders now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

AS_OF = datetime(2025, 6, 1, tzinfo=UTC)

# (relation, subject, [(holder, start, end or None), ...], source article)
CHANGES: list[tuple[str, str, list[tuple[str, str, str | None]], str]] = [
    # --- P6 head of government ---
    ("P6", "United Kingdom", [("Boris Johnson", "2019-07-24", "2022-09-06"), ("Liz Truss", "2022-09-06", "2022-10-25"),
                              ("Rishi Sunak", "2022-10-25", "2024-07-05"), ("Keir Starmer", "2024-07-05", None)],
     "List of prime ministers of the United Kingdom"),
    ("P6", "Germany", [("Angela Merkel", "2005-11-22", "2021-12-08"), ("Olaf Scholz", "2021-12-08", "2025-05-06"),
                       ("Friedrich Merz", "2025-05-06", None)], "Chancellor of Germany"),
    ("P6", "Japan", [("Fumio Kishida", "2021-10-04", "2024-10-01"), ("Shigeru Ishiba", "2024-10-01", None)],
     "List of prime ministers of Japan"),
    ("P6", "Canada", [("Justin Trudeau", "2015-11-04", "2025-03-14"), ("Mark Carney", "2025-03-14", None)],
     "List of prime ministers of Canada"),
    ("P6", "Australia", [("Scott Morrison", "2018-08-24", "2022-05-23"), ("Anthony Albanese", "2022-05-23", None)],
     "List of prime ministers of Australia"),
    ("P6", "Italy", [("Mario Draghi", "2021-02-13", "2022-10-22"), ("Giorgia Meloni", "2022-10-22", None)],
     "List of prime ministers of Italy"),
    ("P6", "Netherlands", [("Mark Rutte", "2010-10-14", "2024-07-02"), ("Dick Schoof", "2024-07-02", None)],
     "Prime Minister of the Netherlands"),
    ("P6", "India", [("Manmohan Singh", "2004-05-22", "2014-05-26"), ("Narendra Modi", "2014-05-26", None)],
     "List of prime ministers of India"),
    ("P6", "Spain", [("Mariano Rajoy", "2011-12-21", "2018-06-02"), ("Pedro Sánchez", "2018-06-02", None)],
     "Prime Minister of Spain"),
    ("P6", "France", [("Gabriel Attal", "2024-01-09", "2024-09-05"), ("Michel Barnier", "2024-09-05", "2024-12-13"),
                      ("François Bayrou", "2024-12-13", None)], "List of prime ministers of France"),
    ("P6", "Poland", [("Mateusz Morawiecki", "2017-12-11", "2023-12-13"), ("Donald Tusk", "2023-12-13", None)],
     "Prime Minister of Poland"),
    ("P6", "New Zealand", [("Jacinda Ardern", "2017-10-26", "2023-01-25"), ("Chris Hipkins", "2023-01-25", "2023-11-27"),
                           ("Christopher Luxon", "2023-11-27", None)], "Prime Minister of New Zealand"),
    ("P6", "Ireland", [("Leo Varadkar", "2022-12-17", "2024-04-09"), ("Simon Harris", "2024-04-09", "2025-01-23"),
                       ("Micheál Martin", "2025-01-23", None)], "Taoiseach"),
    ("P6", "Portugal", [("António Costa", "2015-11-26", "2024-04-02"), ("Luís Montenegro", "2024-04-02", None)],
     "Prime Minister of Portugal"),
    ("P6", "Israel", [("Naftali Bennett", "2021-06-13", "2022-06-30"), ("Yair Lapid", "2022-07-01", "2022-12-29"),
                      ("Benjamin Netanyahu", "2022-12-29", None)], "Prime Minister of Israel"),
    ("P6", "Sweden", [("Magdalena Andersson", "2021-11-30", "2022-10-18"), ("Ulf Kristersson", "2022-10-18", None)],
     "Prime Minister of Sweden"),
    ("P6", "Norway", [("Erna Solberg", "2013-10-16", "2021-10-14"), ("Jonas Gahr Støre", "2021-10-14", None)],
     "Prime Minister of Norway"),
    ("P6", "Pakistan", [("Imran Khan", "2018-08-18", "2022-04-10"), ("Shehbaz Sharif", "2022-04-11", "2023-08-14"),
                        ("Anwaar-ul-Haq Kakar", "2023-08-14", "2024-03-04"), ("Shehbaz Sharif", "2024-03-04", None)],
     "Prime Minister of Pakistan"),
    ("P6", "Thailand", [("Srettha Thavisin", "2023-08-22", "2024-08-14"), ("Paetongtarn Shinawatra", "2024-08-16", None)],
     "Prime Minister of Thailand"),
    # --- P35 head of state ---
    ("P35", "United States", [("Joe Biden", "2021-01-20", "2025-01-20"), ("Donald Trump", "2025-01-20", None)],
     "List of presidents of the United States"),
    ("P35", "United Kingdom", [("Elizabeth II", "1952-02-06", "2022-09-08"), ("Charles III", "2022-09-08", None)],
     "Charles III"),
    ("P35", "Canada", [("Elizabeth II", "1952-02-06", "2022-09-08"), ("Charles III", "2022-09-08", None)],
     "Monarchy of Canada"),
    ("P35", "Australia", [("Elizabeth II", "1952-02-06", "2022-09-08"), ("Charles III", "2022-09-08", None)],
     "Monarchy of Australia"),
    ("P35", "Japan", [("Akihito", "1989-01-07", "2019-04-30"), ("Naruhito", "2019-05-01", None)], "Naruhito"),
    ("P35", "Netherlands", [("Beatrix", "1980-04-30", "2013-04-30"), ("Willem-Alexander", "2013-04-30", None)],
     "Willem-Alexander of the Netherlands"),
    ("P35", "Spain", [("Juan Carlos I", "1975-11-22", "2014-06-19"), ("Felipe VI", "2014-06-19", None)], "Felipe VI"),
    ("P35", "Denmark", [("Margrethe II", "1972-01-14", "2024-01-14"), ("Frederik X", "2024-01-14", None)], "Frederik X"),
    ("P35", "Mexico", [("Andrés Manuel López Obrador", "2018-12-01", "2024-10-01"), ("Claudia Sheinbaum", "2024-10-01", None)],
     "President of Mexico"),
    ("P35", "Brazil", [("Jair Bolsonaro", "2019-01-01", "2023-01-01"),
                       ("Luiz Inácio Lula da Silva", "2023-01-01", None)], "President of Brazil"),
    ("P35", "Argentina", [("Alberto Fernández", "2019-12-10", "2023-12-10"), ("Javier Milei", "2023-12-10", None)],
     "President of Argentina"),
    ("P35", "Indonesia", [("Joko Widodo", "2014-10-20", "2024-10-20"), ("Prabowo Subianto", "2024-10-20", None)],
     "President of Indonesia"),
    ("P35", "Finland", [("Sauli Niinistö", "2012-03-01", "2024-03-01"), ("Alexander Stubb", "2024-03-01", None)],
     "President of Finland"),
    ("P35", "Sri Lanka", [("Ranil Wickremesinghe", "2022-07-21", "2024-09-23"),
                          ("Anura Kumara Dissanayake", "2024-09-23", None)], "President of Sri Lanka"),
    ("P35", "Philippines", [("Rodrigo Duterte", "2016-06-30", "2022-06-30"), ("Bongbong Marcos", "2022-06-30", None)],
     "President of the Philippines"),
    ("P35", "India", [("Ram Nath Kovind", "2017-07-25", "2022-07-25"), ("Droupadi Murmu", "2022-07-25", None)],
     "President of India"),
    ("P35", "Pakistan", [("Arif Alvi", "2018-09-09", "2024-03-09"), ("Asif Ali Zardari", "2024-03-10", None)],
     "President of Pakistan"),
    ("P35", "Vatican City", [("Pope Francis", "2013-03-13", "2025-04-21"), ("Pope Leo XIV", "2025-05-08", None)],
     "Pope Leo XIV"),
    # --- P169 chief executive officer ---
    ("P169", "Apple", [("Steve Jobs", "1997-09-16", "2011-08-24"), ("Tim Cook", "2011-08-24", None)], "Tim Cook"),
    ("P169", "Microsoft", [("Steve Ballmer", "2000-01-13", "2014-02-04"), ("Satya Nadella", "2014-02-04", None)],
     "Satya Nadella"),
    ("P169", "Google", [("Larry Page", "2011-04-04", "2015-10-02"), ("Sundar Pichai", "2015-10-02", None)],
     "Sundar Pichai"),
    ("P169", "Amazon", [("Jeff Bezos", "1994-07-05", "2021-07-05"), ("Andy Jassy", "2021-07-05", None)], "Andy Jassy"),
    ("P169", "The Walt Disney Company", [("Bob Chapek", "2020-02-25", "2022-11-20"), ("Bob Iger", "2022-11-20", None)],
     "Bob Chapek"),
    ("P169", "Starbucks", [("Laxman Narasimhan", "2023-03-20", "2024-09-09"), ("Brian Niccol", "2024-09-09", None)],
     "Brian Niccol"),
    ("P169", "Intel", [("Pat Gelsinger", "2021-02-15", "2024-12-01"), ("Lip-Bu Tan", "2025-03-18", None)], "Lip-Bu Tan"),
    ("P169", "Boeing", [("Dave Calhoun", "2020-01-13", "2024-08-08"), ("Kelly Ortberg", "2024-08-08", None)],
     "Kelly Ortberg"),
    ("P169", "Nike", [("John Donahoe", "2020-01-13", "2024-10-14"), ("Elliott Hill", "2024-10-14", None)], "Nike, Inc."),
    ("P169", "Volkswagen", [("Herbert Diess", "2018-04-12", "2022-09-01"), ("Oliver Blume", "2022-09-01", None)],
     "Oliver Blume"),
    ("P169", "Unilever", [("Alan Jope", "2019-01-01", "2023-07-01"), ("Hein Schumacher", "2023-07-01", "2025-03-01"),
                          ("Fernando Fernandez", "2025-03-01", None)], "Unilever"),
    ("P169", "IBM", [("Ginni Rometty", "2012-01-01", "2020-04-06"), ("Arvind Krishna", "2020-04-06", None)],
     "Arvind Krishna"),
    # --- P488 chairperson ---
    ("P488", "Federal Reserve", [("Janet Yellen", "2014-02-03", "2018-02-03"), ("Jerome Powell", "2018-02-05", None)],
     "Chair of the Federal Reserve"),
    ("P488", "Tesla", [("Elon Musk", "2004-04-01", "2018-11-13"), ("Robyn Denholm", "2018-11-13", None)],
     "Robyn Denholm"),
    ("P488", "Microsoft", [("Bill Gates", "1981-06-25", "2014-02-04"), ("John W. Thompson", "2014-02-04", "2021-06-16"),
                           ("Satya Nadella", "2021-06-16", None)], "Satya Nadella"),
    ("P488", "African Union Commission", [("Moussa Faki", "2017-03-14", "2025-02-15"),
                                          ("Mahmoud Ali Youssouf", "2025-02-15", None)],
     "Chairperson of the African Union Commission"),
    ("P488", "FIFA", [("Sepp Blatter", "1998-06-08", "2015-10-08"), ("Gianni Infantino", "2016-02-26", None)],
     "President of FIFA"),
    # the IOC's next president (Kirsty Coventry) takes office on 2025-06-23: a future start
    ("P488", "International Olympic Committee", [("Jacques Rogge", "2001-07-16", "2013-09-10"),
                                                 ("Thomas Bach", "2013-09-10", "2025-06-23"),
                                                 ("Kirsty Coventry", "2025-06-23", None)],
     "President of the International Olympic Committee"),
    # --- P286 head coach ---
    ("P286", "Manchester United", [("Erik ten Hag", "2022-05-23", "2024-10-28"), ("Ruben Amorim", "2024-11-11", None)],
     "Ruben Amorim"),
    ("P286", "Liverpool", [("Jürgen Klopp", "2015-10-08", "2024-06-01"), ("Arne Slot", "2024-06-01", None)],
     "Arne Slot"),
    ("P286", "FC Barcelona", [("Xavi", "2021-11-06", "2024-06-30"), ("Hansi Flick", "2024-07-01", None)], "Hansi Flick"),
    ("P286", "Bayern Munich", [("Thomas Tuchel", "2023-03-24", "2024-06-30"), ("Vincent Kompany", "2024-07-01", None)],
     "Vincent Kompany"),
    ("P286", "England national football team", [("Gareth Southgate", "2016-11-30", "2024-07-16"),
                                                ("Lee Carsley", "2024-07-18", "2024-12-31"),
                                                ("Thomas Tuchel", "2025-01-01", None)],
     "England national football team"),
    ("P286", "Chelsea", [("Mauricio Pochettino", "2023-07-01", "2024-05-21"), ("Enzo Maresca", "2024-07-01", None)],
     "Enzo Maresca"),
    ("P286", "Juventus", [("Massimiliano Allegri", "2021-05-28", "2024-05-17"), ("Thiago Motta", "2024-07-01", "2025-03-23"),
                          ("Igor Tudor", "2025-03-23", None)], "Igor Tudor"),
    ("P286", "Real Madrid", [("Carlo Ancelotti", "2021-06-01", "2025-05-25"), ("Xabi Alonso", "2025-06-01", None)],
     "Xabi Alonso"),
    ("P286", "Germany national football team", [("Hansi Flick", "2021-08-01", "2023-09-10"),
                                                ("Julian Nagelsmann", "2023-09-22", None)], "Julian Nagelsmann"),
    # --- P54 member of sports team (multi-valued: a club and a national team at once) ---
    ("P54", "Cristiano Ronaldo", [("Juventus", "2018-07-10", "2021-08-31"), ("Manchester United", "2021-08-31", "2022-11-22"),
                                  ("Al Nassr", "2023-01-01", None), ("Portugal national football team", "2003-08-20", None)],
     "Cristiano Ronaldo"),
    ("P54", "Lionel Messi", [("FC Barcelona", "2004-10-16", "2021-08-05"), ("Paris Saint-Germain", "2021-08-10", "2023-06-30"),
                             ("Inter Miami", "2023-07-15", None), ("Argentina national football team", "2005-08-17", None)],
     "Lionel Messi"),
    ("P54", "Kylian Mbappé", [("Paris Saint-Germain", "2017-08-31", "2024-06-30"), ("Real Madrid", "2024-07-01", None),
                              ("France national football team", "2017-03-25", None)], "Kylian Mbappé"),
    ("P54", "Harry Kane", [("Tottenham Hotspur", "2009-07-01", "2023-08-12"), ("Bayern Munich", "2023-08-12", None),
                           ("England national football team", "2015-03-27", None)], "Harry Kane"),
    ("P54", "Neymar", [("Paris Saint-Germain", "2017-08-03", "2023-08-15"), ("Al Hilal", "2023-08-15", "2025-01-28"),
                       ("Santos", "2025-01-31", None), ("Brazil national football team", "2010-08-10", None)], "Neymar"),
    ("P54", "Jude Bellingham", [("Borussia Dortmund", "2020-07-20", "2023-07-01"), ("Real Madrid", "2023-07-01", None),
                                ("England national football team", "2020-11-12", None)], "Jude Bellingham"),
    ("P54", "Karim Benzema", [("Real Madrid", "2009-07-01", "2023-06-30"), ("Al-Ittihad", "2023-07-01", None)],
     "Karim Benzema"),
    ("P54", "LeBron James", [("Cleveland Cavaliers", "2014-07-12", "2018-07-09"), ("Los Angeles Lakers", "2018-07-09", None)],
     "LeBron James"),
    ("P54", "Luka Dončić", [("Dallas Mavericks", "2018-07-09", "2025-02-02"), ("Los Angeles Lakers", "2025-02-02", None)],
     "Luka Dončić"),
    ("P54", "Declan Rice", [("West Ham United", "2017-05-21", "2023-07-15"), ("Arsenal", "2023-07-15", None)],
     "Declan Rice"),
    # --- P1037 director / manager ---
    ("P1037", "International Monetary Fund", [("Christine Lagarde", "2011-07-05", "2019-09-12"),
                                              ("Kristalina Georgieva", "2019-10-01", None)],
     "Managing Director of the International Monetary Fund"),
    ("P1037", "World Health Organization", [("Margaret Chan", "2007-01-04", "2017-06-30"),
                                            ("Tedros Adhanom Ghebreyesus", "2017-07-01", None)],
     "Director-General of the World Health Organization"),
    ("P1037", "UNESCO", [("Irina Bokova", "2009-11-15", "2017-11-15"), ("Audrey Azoulay", "2017-11-15", None)],
     "Director-General of UNESCO"),
    ("P1037", "Federal Bureau of Investigation", [("Christopher Wray", "2017-08-02", "2025-01-19"),
                                                  ("Kash Patel", "2025-02-21", None)], "Director of the FBI"),
    ("P1037", "Central Intelligence Agency", [("William J. Burns", "2021-03-19", "2025-01-20"),
                                              ("John Ratcliffe", "2025-01-23", None)],
     "Director of the Central Intelligence Agency"),
    ("P1037", "Louvre", [("Jean-Luc Martinez", "2013-04-15", "2021-09-01"), ("Laurence des Cars", "2021-09-01", None)],
     "Laurence des Cars"),
    ("P1037", "World Trade Organization", [("Roberto Azevêdo", "2013-09-01", "2020-08-31"),
                                           ("Ngozi Okonjo-Iweala", "2021-03-01", None)],
     "Director-General of the World Trade Organization"),
    # --- P1308 officeholder (the office is the subject) ---
    ("P1308", "President of the United States", [("Joe Biden", "2021-01-20", "2025-01-20"),
                                                 ("Donald Trump", "2025-01-20", None)],
     "List of presidents of the United States"),
    ("P1308", "Prime Minister of the United Kingdom", [("Rishi Sunak", "2022-10-25", "2024-07-05"),
                                                       ("Keir Starmer", "2024-07-05", None)],
     "List of prime ministers of the United Kingdom"),
    ("P1308", "Secretary-General of the United Nations", [("Ban Ki-moon", "2007-01-01", "2016-12-31"),
                                                          ("António Guterres", "2017-01-01", None)],
     "Secretary-General of the United Nations"),
    ("P1308", "Secretary General of NATO", [("Jens Stoltenberg", "2014-10-01", "2024-10-01"),
                                            ("Mark Rutte", "2024-10-01", None)], "Secretary General of NATO"),
    ("P1308", "President of the European Commission", [("Jean-Claude Juncker", "2014-11-01", "2019-11-30"),
                                                       ("Ursula von der Leyen", "2019-12-01", None)],
     "President of the European Commission"),
    ("P1308", "President of France", [("François Hollande", "2012-05-15", "2017-05-14"),
                                      ("Emmanuel Macron", "2017-05-14", None)], "President of France"),
    ("P1308", "Mayor of London", [("Boris Johnson", "2008-05-04", "2016-05-09"), ("Sadiq Khan", "2016-05-09", None)],
     "Mayor of London"),
    ("P1308", "President of the European Council", [("Charles Michel", "2019-12-01", "2024-11-30"),
                                                    ("António Costa", "2024-12-01", None)],
     "President of the European Council"),
]

ALIASES = {
    "United Kingdom": ["UK", "Britain"], "United States": ["USA", "United States of America"],
    "Luiz Inácio Lula da Silva": ["Lula"], "Bongbong Marcos": ["Ferdinand Marcos Jr."],
    "Andrés Manuel López Obrador": ["AMLO"], "Xavi": ["Xavi Hernández"], "Pope Leo XIV": ["Leo XIV"],
    "Pope Francis": ["Francis"], "Charles III": ["King Charles III"], "Elizabeth II": ["Queen Elizabeth II"],
    "Keir Starmer": ["Sir Keir Starmer"], "Manchester United": ["Manchester United F.C."],
    "Tedros Adhanom Ghebreyesus": ["Tedros"], "Liverpool": ["Liverpool F.C."], "Chelsea": ["Chelsea F.C."],
}
# Phrasings people use, written for this benchmark and never given to kbsync (not in the relation
# catalogue, not trained on): how often the edited model names the current holder when asked so.
HELD_OUT = {
    "P6": ["The prime minister of {} is", "Who leads the government of {}? It is", "{} is governed by"],
    "P35": ["The president of {} is", "Who is the head of state of {}? It is", "{} has as its head of state"],
    "P54": ["{} is a player of", "Which club does {} play for? The answer is", "{} signed for"],
    "P169": ["The chief executive of {} is", "Who runs {}? The CEO is", "{} is led by its CEO,"],
    "P286": ["The manager of {} is", "Who coaches {}? It is", "{} is coached by"],
    "P488": ["The chair of {} is", "Who chairs {}? It is", "{} has as its chairperson"],
    "P1037": ["The head of {} is", "Who directs {}? It is", "{} is headed by"],
    "P1308": ["The person who is {} now is", "Who is the {}? It is", "Today the {} is"],
}

# The office each subject's head of government (Wikidata P1313, "office held by head of
# government") and head of state (P1906, "office held by head of state") holds, as the English
# labels of those office items read (e.g. Q14211 "Prime Minister of the United Kingdom"). Not
# written into the Turtle KB (write_kb); used by benchmarks/heldout_phrasings.py only.
OFFICE_TITLES = {
    "P1313": {
        "United Kingdom": "Prime Minister of the United Kingdom", "Germany": "Chancellor of Germany",
        "Japan": "Prime Minister of Japan", "Canada": "Prime Minister of Canada",
        "Australia": "Prime Minister of Australia", "Italy": "Prime Minister of Italy",
        "Netherlands": "Prime Minister of the Netherlands", "India": "Prime Minister of India",
        "Spain": "Prime Minister of Spain", "France": "Prime Minister of France",
        "Poland": "Prime Minister of Poland", "New Zealand": "Prime Minister of New Zealand",
        "Ireland": "Taoiseach", "Portugal": "Prime Minister of Portugal", "Israel": "Prime Minister of Israel",
        "Sweden": "Prime Minister of Sweden", "Norway": "Prime Minister of Norway",
        "Pakistan": "Prime Minister of Pakistan", "Thailand": "Prime Minister of Thailand",
    },
    "P1906": {
        "United States": "President of the United States", "United Kingdom": "monarch of the United Kingdom",
        "Canada": "monarch of Canada", "Australia": "monarch of Australia", "Japan": "Emperor of Japan",
        "Netherlands": "monarch of the Netherlands", "Spain": "monarch of Spain", "Denmark": "monarch of Denmark",
        "Mexico": "President of Mexico", "Brazil": "President of Brazil", "Argentina": "President of Argentina",
        "Indonesia": "President of Indonesia", "Finland": "President of Finland",
        "Sri Lanka": "President of Sri Lanka", "Philippines": "President of the Philippines",
        "India": "President of India", "Pakistan": "President of Pakistan", "Vatican City": "pope",
    },
}
OFFICE_OF = {"P6": "P1313", "P35": "P1906"}   # the relation whose holder holds that office

PREFERRED_CURRENT = {"P35", "P1308"}  # relations whose current holder is marked preferred
SINGLE_VALUED = {"P6", "P35", "P169", "P286", "P488", "P1037"}


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def current(holders: list[tuple[str, str, str | None]], as_of: datetime = AS_OF) -> list[str]:
    """Holders current as of `as_of`, computed straight from the table (the benchmark's truth)."""
    return sorted({h for h, start, end in holders if day(start) <= as_of and (end is None or day(end) > as_of)})


def stale(holders: list[tuple[str, str, str | None]], as_of: datetime = AS_OF) -> list[str]:
    now = set(current(holders, as_of))
    return sorted({h for h, _, end in holders if end is not None and day(end) <= as_of and h not in now})


def write_kb(path: Path) -> dict[str, str]:
    """Write the Turtle file; returns label -> minted id."""
    ids: dict[str, str] = {}

    def qid(label: str) -> str:
        return ids.setdefault(label, f"Q{92000001 + len(ids)}")

    lines = [
        "# Generated by benchmarks/real_changes_kb.py: real changes as of 2025-06-01, sources in that file.",
        "@prefix wd: <http://www.wikidata.org/entity/> .",
        "@prefix wds: <http://www.wikidata.org/entity/statement/> .",
        "@prefix p: <http://www.wikidata.org/prop/> .",
        "@prefix wdt: <http://www.wikidata.org/prop/direct/> .",
        "@prefix ps: <http://www.wikidata.org/prop/statement/> .",
        "@prefix pq: <http://www.wikidata.org/prop/qualifier/> .",
        "@prefix wikibase: <http://wikiba.se/ontology#> .",
        "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .",
        "@prefix skos: <http://www.w3.org/2004/02/skos/core#> .",
        "@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .",
    ]
    for n, (relation, subject, holders, _) in enumerate(CHANGES):
        s = qid(subject)
        # wdt: as Wikidata writes it: the best-rank values, so every holder when all are normal
        best = [h for h, _, end in holders if relation in PREFERRED_CURRENT and end is None] or [h for h, *_ in holders]
        for holder in dict.fromkeys(best):
            lines.append(f"wd:{s} wdt:{relation} wd:{qid(holder)} .")
        for k, (holder, start, end) in enumerate(holders):
            st = f"wds:s{n}-{k}"
            preferred = relation in PREFERRED_CURRENT and end is None
            rank = "PreferredRank" if preferred else "NormalRank"
            lines.append(f"wd:{s} p:{relation} {st} .")
            lines.append(f"{st} ps:{relation} wd:{qid(holder)} ; wikibase:rank wikibase:{rank} ;")
            lines.append(f'    pq:P580 "{start}T00:00:00Z"^^xsd:dateTime' + (" ." if end is None else " ;"))
            if end is not None:
                lines.append(f'    pq:P582 "{end}T00:00:00Z"^^xsd:dateTime .')
    for label, q in ids.items():
        alt = "".join(f' ; skos:altLabel "{a}"@en' for a in ALIASES.get(label, []))
        lines.append(f'wd:{q} rdfs:label "{label}"@en{alt} .')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids
