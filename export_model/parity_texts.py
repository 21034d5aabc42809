"""The fixed parity set: what the int8 model must agree on with the FP32 reference.

Built deterministically (no randomness) so every export is judged on the same texts.
Covers English, Korean, place-like strings, emoji, the empty string and texts past the
model's max length.
"""

from __future__ import annotations

CATEGORIES = ("restaurants", "accommodation", "nature", "humanities", "shopping", "leisure_sports")

ENGLISH = (
    "A quiet cafe with a view of the harbour.",
    "The best grilled pork belly in Mapo, open until midnight.",
    "Family-friendly beach with shallow water and rental umbrellas.",
    "Historic palace grounds with a changing of the guard ceremony.",
    "Boutique hotel near the subway station with rooftop bar.",
    "Hiking trail to the summit takes about three hours.",
    "Night market with street food, crafts and live music.",
    "Art museum featuring contemporary Korean painters.",
    "Budget hostel with shared kitchen and laundry.",
    "Traditional tea house in a restored hanok.",
    "Cycling path along the river, bikes for rent at the entrance.",
    "Outlet mall with international brands and a food court.",
    "Temple stay program with meditation and vegetarian meals.",
    "Ski resort with night skiing and beginner slopes.",
    "Seafood restaurant famous for raw fish and spicy stew.",
    "Botanical garden with a large greenhouse.",
    "Observation deck on the 123rd floor.",
    "Waterfall reachable by a short walk from the parking lot.",
    "Bookstore with a cafe and reading corners.",
    "Amusement park with roller coasters and a parade.",
    "I liked this place a lot.",
    "bookmark for later",
    "click",
    "Where should we eat tonight?",
    "Rainy day activities for kids in Busan",
)

KOREAN = (
    "서울 마포구의 조용한 카페",
    "해운대 해수욕장 근처 맛집",
    "제주도 올레길 7코스",
    "경복궁 야간 개장",
    "부산 자갈치 시장 회센터",
    "강릉 커피 거리",
    "전주 한옥마을 비빔밥",
    "설악산 국립공원 등산로",
    "명동 쇼핑 거리",
    "남산 서울타워 전망대",
    "인사동 전통 찻집",
    "가족 여행으로 좋은 펜션",
    "아이와 함께 가기 좋은 박물관",
    "서핑하기 좋은 양양 해변",
    "광장시장 빈대떡",
)

EMOJI = (
    "🍜🍣🍱",
    "Best view ever 🌅🌊",
    "맛집 👍👍",
    "🏨 hotel near station 🚇",
    "⛰️ hiking ⛺ camping 🔥",
    "☕",
)

EDGE = (
    "",
    " ",
    "a",
    "123456",
    "restaurants",
    "!!!???",
    "NULL",
    "'; DROP TABLE place_vectors; --",
    "\u00e9t\u00e9 \u00e0 Paris",
    "Ж" * 10,
)


def _place_like() -> list[str]:
    ids = (1, 42, 777, 12345, 123456, 987654, 5000001)
    return [f"{category} {place_id}" for category in CATEGORIES for place_id in ids]


def _templated() -> list[str]:
    """Texts as the shards compose them: catalogue entries (English and Korean) and fallbacks."""
    from witple_batch.place_text import CatalogueEntry, place_text

    entries = [
        CatalogueEntry(name=name, overview=overview, region=region, city=city)
        for name, overview, (region, city) in zip(
            ("Harbour View Cafe", "해운대 해수욕장", "Royal Palace"),
            (ENGLISH[0], KOREAN[1], ENGLISH[2] + " " + KOREAN[2]),
            (("Busan", "Haeundae"), ("부산", "해운대구"), ("Seoul", "Jongno")),
            strict=True,
        )
    ]
    return [place_text(category, entry) for category in CATEGORIES for entry in (*entries, None)]


def _long() -> list[str]:
    base = ENGLISH[1] + " " + KOREAN[0] + " "
    return [base * n for n in (20, 40, 80)] + [" ".join(ENGLISH) * 3, "word " * 600]


def _mixed() -> list[str]:
    return [f"{e} {k}" for e, k in zip(ENGLISH, KOREAN, strict=False)] + [
        f"{c} {e}" for c, e in zip(CATEGORIES * 5, ENGLISH, strict=False)
    ]


def parity_texts() -> list[str]:
    texts = [*ENGLISH, *KOREAN, *EMOJI, *EDGE, *_place_like(), *_templated(), *_long(), *_mixed()]
    texts += [t.upper() for t in ENGLISH] + [t.lower() + "." for t in KOREAN]
    return texts
