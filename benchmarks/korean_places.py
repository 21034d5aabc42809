"""60 Korean places in six categories, each with an English translation of the same entry.

Written for benchmarks/korean.py (`python -m benchmarks.quality korean`) (not taken from any dataset). Entries look like the main
server's catalogue rows: a name, a region and city, a one- or two-sentence overview. Every entry
has the same catalogue category ("관광지" / "tourist attraction"), so the benchmark's label never
appears in the text as a category word; the names keep theirs (해수욕장, 시장, ...), as real
names do. The two tables hold the same places in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

from witple_batch.place_text import CatalogueEntry, place_text

CATEGORIES = ("beach", "palace", "market", "mountain", "museum", "temple")
TABLE = "humanities"  # place_text needs a table; each entry's own category word replaces its name

# category | name | region | city | overview
KOREAN = """
beach | 해운대 해수욕장 | 부산 | 해운대구 | 1.5km 넘게 이어진 백사장에 여름이면 파라솔이 가득 들어서는 부산의 대표 해변이다. 겨울에는 해돋이를 보러 많이 찾는다.
beach | 광안리 해수욕장 | 부산 | 수영구 | 광안대교의 야경을 바라보며 모래사장을 걸을 수 있는 해변으로, 해변을 따라 카페와 횟집이 늘어서 있다.
beach | 송정 해수욕장 | 부산 | 해운대구 | 수심이 얕고 파도가 완만해 서핑을 처음 배우는 사람들이 많이 찾는 해변이다. 해변 앞에 서핑 강습소가 모여 있다.
beach | 경포 해수욕장 | 강원 | 강릉시 | 소나무 숲과 경포호 사이에 넓은 백사장이 펼쳐진 동해안의 해변으로, 새해 일출 명소로 이름나 있다.
beach | 속초 해수욕장 | 강원 | 속초시 | 시내에서 걸어갈 수 있는 해변으로, 해변 옆 대관람차에서 동해 바다와 백사장을 내려다볼 수 있다.
beach | 협재 해수욕장 | 제주 | 제주시 | 에메랄드빛 얕은 바다와 하얀 모래사장 너머로 비양도가 보이는 제주 서쪽의 해변이다.
beach | 함덕 해수욕장 | 제주 | 제주시 | 물이 맑고 수심이 얕아 아이와 함께 물놀이하기 좋은 해변으로, 여름에는 야간 개장도 한다.
beach | 중문 색달 해수욕장 | 제주 | 서귀포시 | 검은 모래가 섞인 백사장과 높은 파도로 서핑객이 많이 찾는 해변이다. 해변 위로 리조트 단지가 있다.
beach | 대천 해수욕장 | 충남 | 보령시 | 조개껍데기 가루로 이루어진 서해안의 긴 백사장으로, 여름마다 머드축제가 열린다.
beach | 을왕리 해수욕장 | 인천 | 중구 | 공항에서 가까운 서해의 해변으로, 해 질 녘 낙조를 보며 조개구이를 먹으려는 사람들로 붐빈다.
palace | 경복궁 | 서울 | 종로구 | 조선 왕조의 법궁으로 근정전과 경회루가 남아 있으며, 광화문 앞에서 수문장 교대식이 열린다.
palace | 창덕궁 | 서울 | 종로구 | 유네스코 세계유산에 오른 조선의 궁궐로, 자연 지형을 살린 후원이 아름답기로 유명하다.
palace | 덕수궁 | 서울 | 중구 | 대한제국의 황궁으로 전통 전각과 서양식 석조전이 함께 있으며, 궁을 감싼 돌담길을 걷기 좋다.
palace | 창경궁 | 서울 | 종로구 | 성종이 왕실 어른들을 위해 세운 궁궐로, 명정전과 춘당지 연못이 남아 있다.
palace | 종묘 | 서울 | 종로구 | 조선 역대 왕과 왕비의 신주를 모신 왕실 사당으로, 해마다 종묘제례와 제례악이 거행된다.
palace | 수원 화성 | 경기 | 수원시 | 정조가 쌓은 조선 후기의 성곽으로, 성곽길을 따라 걸으며 장안문과 화성행궁을 둘러볼 수 있다.
palace | 대릉원 | 경북 | 경주시 | 신라 왕과 귀족의 거대한 고분들이 모여 있는 유적으로, 천마총 내부에서 출토 유물을 볼 수 있다.
palace | 첨성대 | 경북 | 경주시 | 신라 선덕여왕 때 세운 천문 관측대로, 동양에서 가장 오래된 천문대로 알려져 있다.
palace | 동궁과 월지 | 경북 | 경주시 | 신라 왕궁의 별궁 터로, 복원된 전각이 연못에 비치는 야경이 아름답다.
palace | 공산성 | 충남 | 공주시 | 백제가 웅진에 도읍했을 때 왕성을 지키던 성곽으로, 금강을 내려다보는 성벽길이 이어진다.
market | 광장시장 | 서울 | 종로구 | 빈대떡과 마약김밥, 육회를 파는 먹거리 골목으로 유명한 전통시장으로, 한복 원단 가게도 많다.
market | 남대문시장 | 서울 | 중구 | 의류와 잡화, 주방용품을 도매가로 파는 가게가 빽빽한 시장으로, 갈치조림 골목이 있다.
market | 자갈치시장 | 부산 | 중구 | 국내 최대의 수산시장으로, 1층에서 고른 활어를 2층 식당에서 회로 먹을 수 있다.
market | 국제시장 | 부산 | 중구 | 한국전쟁 이후 피란민들이 모여 형성된 시장으로, 구제 의류 가게와 비빔당면을 파는 먹자골목이 있다.
market | 서문시장 | 대구 | 중구 | 대구를 대표하는 전통시장으로 원단과 건어물 가게가 많고, 밤에는 야시장 먹거리 노점이 들어선다.
market | 동문재래시장 | 제주 | 제주시 | 감귤과 오메기떡, 갈치 같은 제주 특산물을 파는 시장으로, 저녁에는 야시장이 열린다.
market | 속초 관광수산시장 | 강원 | 속초시 | 닭강정과 오징어순대, 씨앗호떡을 사려는 줄이 길게 늘어서는 속초의 전통시장이다.
market | 전주 남부시장 | 전북 | 전주시 | 콩나물국밥 가게가 모여 있는 전주의 전통시장으로, 2층 청년몰과 주말 야시장이 있다.
market | 망원시장 | 서울 | 마포구 | 저렴한 분식과 반찬, 과일을 파는 동네 시장으로, 고로케와 닭강정을 사 먹으며 구경하기 좋다.
market | 통인시장 | 서울 | 종로구 | 엽전으로 반찬을 골라 담는 도시락 카페로 알려진 작은 전통시장으로, 기름떡볶이가 명물이다.
mountain | 설악산 | 강원 | 속초시 | 대청봉과 울산바위로 이어지는 등산로가 있는 국립공원으로, 가을 단풍이 절정일 때 등산객이 가장 많다. 케이블카로 권금성에 오를 수 있다.
mountain | 한라산 | 제주 | 제주시 | 남한에서 가장 높은 산으로, 성판악이나 관음사 코스로 정상의 백록담 분화구까지 오를 수 있다.
mountain | 지리산 | 경남 | 산청군 | 천왕봉을 비롯한 봉우리가 능선으로 이어진 국내 첫 국립공원으로, 며칠에 걸친 종주 산행으로 유명하다.
mountain | 북한산 | 서울 | 강북구 | 서울 도심에서 가까운 국립공원으로, 화강암 봉우리인 백운대에 오르면 서울 시내가 한눈에 내려다보인다.
mountain | 내장산 | 전북 | 정읍시 | 붉게 물드는 단풍나무 터널로 이름난 산으로, 가을이면 케이블카와 탐방로가 단풍객으로 붐빈다.
mountain | 덕유산 | 전북 | 무주군 | 곤돌라를 타고 향적봉 근처까지 오를 수 있는 산으로, 겨울 눈꽃과 상고대가 아름답다.
mountain | 소백산 | 경북 | 영주시 | 비로봉으로 이어지는 완만한 능선에 늦봄이면 철쭉이 만발하는 산으로, 바람이 세기로 유명하다.
mountain | 월출산 | 전남 | 영암군 | 평야 위로 솟은 기암괴석의 바위산으로, 봉우리 사이에 걸린 구름다리를 건너는 등산 코스가 있다.
mountain | 오대산 | 강원 | 평창군 | 다섯 봉우리가 둘러싼 국립공원으로, 비로봉까지 오르는 길과 계곡을 따라 걷는 선재길이 있다.
mountain | 관악산 | 서울 | 관악구 | 서울 남쪽의 바위산으로, 연주대 정상까지 가파른 암릉 구간이 있어 주말마다 등산객이 많다.
museum | 국립중앙박물관 | 서울 | 용산구 | 선사시대부터 조선시대까지의 유물을 시대별로 전시하는 국내 최대 박물관으로, 어린이박물관과 기획전시실이 있다.
museum | 국립현대미술관 서울관 | 서울 | 종로구 | 국내외 현대미술 작가의 회화와 설치, 영상 작품을 전시하는 미술관으로, 기획전이 자주 바뀐다.
museum | 리움미술관 | 서울 | 용산구 | 고미술 소장품과 세계적인 현대미술 작품을 함께 전시하는 사립 미술관이다.
museum | 국립경주박물관 | 경북 | 경주시 | 신라의 금관과 토기 등 출토 유물을 전시하는 박물관으로, 야외에 성덕대왕신종이 있다.
museum | 부산시립미술관 | 부산 | 해운대구 | 현대미술 기획전과 소장품전을 여는 미술관으로, 이우환 작가의 작품을 모은 별관이 있다.
museum | 국립민속박물관 | 서울 | 종로구 | 옛 한국인의 의식주와 일 년 세시풍속을 전시로 보여주는 생활사 박물관이다.
museum | 서울시립미술관 | 서울 | 중구 | 옛 대법원 건물을 고쳐 만든 미술관으로, 사진과 회화, 미디어아트 전시를 무료로 볼 수 있다.
museum | 본태박물관 | 제주 | 서귀포시 | 안도 다다오가 설계한 건물에서 전통 공예품과 현대미술 작품을 전시하는 박물관이다.
museum | 국립과천과학관 | 경기 | 과천시 | 천체투영관과 다양한 과학 체험 전시관을 갖춘 과학관으로, 아이들과 함께 가기 좋다.
museum | 대림미술관 | 서울 | 종로구 | 사진과 디자인, 패션을 주제로 한 전시를 여는 미술관으로, 젊은 관람객에게 인기가 많다.
temple | 불국사 | 경북 | 경주시 | 신라 때 창건된 사찰로 다보탑과 석가탑이 대웅전 앞에 서 있으며, 석굴암과 함께 세계유산에 올랐다.
temple | 해동용궁사 | 부산 | 기장군 | 바닷가 바위 위에 지어진 사찰로, 파도 소리를 들으며 대웅전에서 기도를 올릴 수 있다.
temple | 조계사 | 서울 | 종로구 | 대한불교조계종의 총본산으로, 부처님오신날이면 경내가 연등으로 가득 찬다.
temple | 봉은사 | 서울 | 강남구 | 강남 도심 속에 자리한 천년 고찰로, 스님과 함께하는 템플스테이와 참선 프로그램을 운영한다.
temple | 해인사 | 경남 | 합천군 | 팔만대장경 목판을 보관한 장경판전이 있는 사찰로, 법보종찰로 불린다.
temple | 통도사 | 경남 | 양산시 | 부처님의 진신사리를 모신 적멸보궁이 있는 사찰로, 대웅전에 불상을 두지 않은 것으로 유명하다.
temple | 송광사 | 전남 | 순천시 | 고려 시대부터 많은 고승을 배출한 승보사찰로, 계곡 위의 누각과 다리가 아름답다.
temple | 법주사 | 충북 | 보은군 | 국내 유일의 목조 오층탑인 팔상전과 거대한 금동미륵대불이 있는 사찰이다.
temple | 낙산사 | 강원 | 양양군 | 의상대사가 창건한 사찰로, 동해를 바라보는 해수관음상과 홍련암이 있다.
temple | 월정사 | 강원 | 평창군 | 전나무 숲길 끝에 자리한 사찰로, 고려 시대의 팔각구층석탑이 경내 한가운데 서 있다.
"""

# name | region | city | overview
ENGLISH = """
Haeundae Beach | Busan | Haeundae-gu | Busan's best-known beach, over 1.5 km of sand filled with parasols in summer. In winter people come for the sunrise.
Gwangalli Beach | Busan | Suyeong-gu | A beach where you walk on the sand facing the lit-up Gwangan Bridge at night, lined with cafes and raw fish restaurants.
Songjeong Beach | Busan | Haeundae-gu | Shallow water and gentle waves make it a favourite for first-time surfers. Surf schools line the seafront.
Gyeongpo Beach | Gangwon | Gangneung | An east coast beach whose wide sands lie between a pine forest and Gyeongpo Lake, famous for the New Year sunrise.
Sokcho Beach | Gangwon | Sokcho | A beach within walking distance of the town centre, with a Ferris wheel beside it overlooking the East Sea and the sand.
Hyeopjae Beach | Jeju | Jeju City | A beach on Jeju's west coast with shallow emerald water, white sand and Biyangdo island on the horizon.
Hamdeok Beach | Jeju | Jeju City | Clear, shallow water makes this beach good for swimming with children; in summer it stays open for night swimming.
Jungmun Saekdal Beach | Jeju | Seogwipo | Sand mixed with black grains and high waves draw surfers to this beach, with a resort complex above it.
Daecheon Beach | South Chungcheong | Boryeong | A long west coast beach made of crushed shells, home to the mud festival every summer.
Eurwangni Beach | Incheon | Jung-gu | A west coast beach near the airport, busy at dusk with people eating grilled clams while they watch the sunset.
Gyeongbokgung Palace | Seoul | Jongno-gu | The main royal palace of the Joseon dynasty, with Geunjeongjeon Hall and Gyeonghoeru Pavilion; the gate guard ceremony takes place at Gwanghwamun.
Changdeokgung Palace | Seoul | Jongno-gu | A Joseon royal palace on the UNESCO World Heritage list, famous for its secret garden laid out along the natural terrain.
Deoksugung Palace | Seoul | Jung-gu | The imperial palace of the Korean Empire, where traditional halls stand beside the Western-style Seokjojeon; its stone wall road is a pleasant walk.
Changgyeonggung Palace | Seoul | Jongno-gu | A palace King Seongjong built for the elder members of the royal family, with Myeongjeongjeon Hall and Chundangji Pond.
Jongmyo Shrine | Seoul | Jongno-gu | The royal shrine holding the spirit tablets of Joseon's kings and queens, where the ancestral rite and its music are performed every year.
Hwaseong Fortress | Gyeonggi | Suwon | A late Joseon fortress built by King Jeongjo; a walk along its walls passes Janganmun Gate and the Hwaseong temporary palace.
Daereungwon Tomb Complex | North Gyeongsang | Gyeongju | A site of huge burial mounds of Silla kings and nobles; inside Cheonmachong Tomb you can see what was excavated there.
Cheomseongdae Observatory | North Gyeongsang | Gyeongju | An astronomical observatory built under Queen Seondeok of Silla, known as the oldest surviving observatory in East Asia.
Donggung Palace and Wolji Pond | North Gyeongsang | Gyeongju | The site of a Silla royal detached palace, beautiful at night when the restored pavilions are reflected in the pond.
Gongsanseong Fortress | South Chungcheong | Gongju | The fortress that guarded the royal city when Baekje's capital was at Ungjin, with a wall path overlooking the Geum River.
Gwangjang Market | Seoul | Jongno-gu | A traditional market famous for its food alley of mung bean pancakes, mini gimbap and beef tartare, with many hanbok fabric shops.
Namdaemun Market | Seoul | Jung-gu | A market packed with shops selling clothes, accessories and kitchenware at wholesale prices, with an alley of braised cutlassfish restaurants.
Jagalchi Market | Busan | Jung-gu | The country's largest fish market: pick live fish on the ground floor and eat it as sashimi in the restaurants upstairs.
Gukje Market | Busan | Jung-gu | A market formed by refugees after the Korean War, with second-hand clothing shops and a food alley selling glass noodle salad.
Seomun Market | Daegu | Jung-gu | Daegu's best-known traditional market, full of fabric and dried seafood shops, with night market food stalls after dark.
Dongmun Traditional Market | Jeju | Jeju City | A market selling Jeju produce such as tangerines, omegi rice cakes and cutlassfish, with a night market in the evening.
Sokcho Tourist and Fishery Market | Gangwon | Sokcho | Sokcho's traditional market, where long queues form for sweet fried chicken, stuffed squid and seed-filled pancakes.
Jeonju Nambu Market | North Jeolla | Jeonju | Jeonju's traditional market with a row of bean sprout soup restaurants, a young entrepreneurs' mall upstairs and a weekend night market.
Mangwon Market | Seoul | Mapo-gu | A neighbourhood market selling cheap snacks, side dishes and fruit, good for browsing with a croquette or fried chicken in hand.
Tongin Market | Seoul | Jongno-gu | A small traditional market known for its lunch box cafe where you pay for side dishes with old brass coins; its oil tteokbokki is famous.
Seoraksan Mountain | Gangwon | Sokcho | A national park with hiking trails to Daecheongbong Peak and Ulsanbawi Rock, busiest when the autumn leaves peak. A cable car climbs to Gwongeumseong.
Hallasan Mountain | Jeju | Jeju City | The highest mountain in South Korea; the Seongpanak and Gwaneumsa trails climb to the Baengnokdam crater at the summit.
Jirisan Mountain | South Gyeongsang | Sancheong | Korea's first national park, a ridge of peaks including Cheonwangbong, famous for ridge treks that take several days.
Bukhansan Mountain | Seoul | Gangbuk-gu | A national park close to central Seoul; from the granite peak of Baegundae the whole city lies below.
Naejangsan Mountain | North Jeolla | Jeongeup | A mountain known for its tunnel of red maples; in autumn its cable car and trails are crowded with leaf-watchers.
Deogyusan Mountain | North Jeolla | Muju | A mountain where a gondola takes you close to Hyangjeokbong Peak, beautiful in winter with snow and hoarfrost on the trees.
Sobaeksan Mountain | North Gyeongsang | Yeongju | A mountain whose gentle ridge to Birobong Peak is covered in royal azaleas in late spring, known for its strong winds.
Wolchulsan Mountain | South Jeolla | Yeongam | A rocky mountain of strange crags rising from the plain, with a trail that crosses a suspension bridge between peaks.
Odaesan Mountain | Gangwon | Pyeongchang | A national park ringed by five peaks, with a climb to Birobong and the Seonjae trail along the valley stream.
Gwanaksan Mountain | Seoul | Gwanak-gu | A rocky mountain in the south of Seoul with steep ridge sections up to the Yeonjudae summit, busy with hikers every weekend.
National Museum of Korea | Seoul | Yongsan-gu | The country's largest museum, showing artefacts from prehistory to the Joseon era period by period, with a children's museum and special exhibition halls.
National Museum of Modern and Contemporary Art, Seoul | Seoul | Jongno-gu | An art museum showing paintings, installations and video works by Korean and international contemporary artists, with frequently changing exhibitions.
Leeum Museum of Art | Seoul | Yongsan-gu | A private art museum that shows its collection of traditional Korean art beside major works of contemporary art.
Gyeongju National Museum | North Gyeongsang | Gyeongju | A museum displaying Silla gold crowns, pottery and other excavated objects, with the Divine Bell of King Seongdeok outside.
Busan Museum of Art | Busan | Haeundae-gu | An art museum holding contemporary exhibitions and collection shows, with an annex devoted to the works of Lee Ufan.
National Folk Museum of Korea | Seoul | Jongno-gu | A museum of everyday life showing how Koreans once ate, dressed and lived, and the customs of the year.
Seoul Museum of Art | Seoul | Jung-gu | An art museum in the converted former Supreme Court building, with free exhibitions of photography, painting and media art.
Bonte Museum | Jeju | Seogwipo | A museum in a building designed by Tadao Ando, exhibiting traditional crafts and contemporary artworks.
Gwacheon National Science Museum | Gyeonggi | Gwacheon | A science museum with a planetarium and many hands-on exhibition halls, a good visit with children.
Daelim Museum | Seoul | Jongno-gu | An art museum holding exhibitions on photography, design and fashion, popular with young visitors.
Bulguksa Temple | North Gyeongsang | Gyeongju | A temple founded in the Silla era, with the Dabotap and Seokgatap pagodas before its main hall, a World Heritage site together with Seokguram.
Haedong Yonggungsa Temple | Busan | Gijang-gun | A temple built on rocks at the water's edge, where you can pray in the main hall to the sound of the waves.
Jogyesa Temple | Seoul | Jongno-gu | The head temple of the Jogye Order of Korean Buddhism, its grounds filled with lotus lanterns on Buddha's Birthday.
Bongeunsa Temple | Seoul | Gangnam-gu | A thousand-year-old temple in the middle of Gangnam, running temple stays and meditation sessions with the monks.
Haeinsa Temple | South Gyeongsang | Hapcheon | The temple whose depositories keep the woodblocks of the Tripitaka Koreana, called the temple of the Dharma jewel.
Tongdosa Temple | South Gyeongsang | Yangsan | A temple enshrining relics of the Buddha, famous for having no Buddha statue in its main hall.
Songgwangsa Temple | South Jeolla | Suncheon | The temple of the Sangha jewel, home to many great monks since the Goryeo era, with a beautiful pavilion and bridge over the stream.
Beopjusa Temple | North Chungcheong | Boeun | A temple with Palsangjeon, the only five-storey wooden pagoda in the country, and a giant gilt-bronze Maitreya Buddha.
Naksansa Temple | Gangwon | Yangyang | A temple founded by the monk Uisang, with a statue of the Bodhisattva of Mercy facing the East Sea and the Hongnyeonam hermitage.
Woljeongsa Temple | Gangwon | Pyeongchang | A temple at the end of a fir forest path, with a Goryeo-era nine-storey octagonal stone pagoda in the middle of its grounds.
"""


@dataclass(frozen=True)
class Place:
    category: str
    korean: CatalogueEntry
    english: CatalogueEntry


def _rows(table: str) -> list[list[str]]:
    return [[field.strip() for field in line.split("|")] for line in table.strip().splitlines()]


def _places() -> tuple[Place, ...]:
    places = []
    for (category, *korean), english in zip(_rows(KOREAN), _rows(ENGLISH), strict=True):
        (ko_name, ko_region, ko_city, ko_overview), (en_name, en_region, en_city, en_overview) = korean, english
        places.append(
            Place(
                category,
                CatalogueEntry(ko_name, ko_overview, ko_region, ko_city, "관광지"),
                CatalogueEntry(en_name, en_overview, en_region, en_city, "tourist attraction"),
            )
        )
    return tuple(places)


PLACES = _places()


def texts(language: str, part: str = "catalogue") -> list[str]:
    """Each place's text, in PLACES order: the whole catalogue text a shard embeds, or the overview alone."""
    entries = [place.korean if language == "korean" else place.english for place in PLACES]
    if part == "overview":
        return [entry.overview or "" for entry in entries]
    return [place_text(TABLE, entry) for entry in entries]


def labels() -> list[str]:
    return [place.category for place in PLACES]
