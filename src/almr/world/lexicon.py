"""Word lists of the demo world, each entry paired English/Chinese: people, feelings and the
events that cause them, products and opinions, news events, occupations and countable things.

The emotion weights of an event are the world's ground truth: stories in the corpora name a
feeling drawn from them, and the SECEU-like benchmark's norm vectors derive from them.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Person:
    """A name in both languages (a transliteration or the pinyin), so translated sentences
    about a person name the same person."""

    en: str
    zh: str
    female: bool

    def name(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh

    def pronoun(self, lang: str) -> str:
        if lang == "en":
            return "she" if self.female else "he"
        return "她" if self.female else "他"

    @property
    def possessive(self) -> str:
        return "her" if self.female else "his"


# People the English texts talk about, and those the Chinese texts talk about.
EN_PEOPLE = [
    Person("Anna", "安娜", True), Person("Ben", "本", False), Person("Carlos", "卡洛斯", False),
    Person("Diana", "黛安娜", True), Person("Emma", "艾玛", True), Person("Felix", "费利克斯", False),
    Person("Grace", "格蕾丝", True), Person("Hugo", "雨果", False), Person("Irene", "艾琳", True),
    Person("Jack", "杰克", False), Person("Laura", "劳拉", True), Person("Mark", "马克", False),
    Person("Nina", "妮娜", True), Person("Oscar", "奥斯卡", False), Person("Paula", "保拉", True),
    Person("Sam", "山姆", False), Person("Tina", "蒂娜", True), Person("Victor", "维克多", False),
]  # fmt: skip
ZH_PEOPLE = [
    Person("Zhang Wei", "张伟", False), Person("Wang Fang", "王芳", True), Person("Li Na", "李娜", True),
    Person("Liu Yang", "刘洋", False), Person("Chen Jing", "陈静", True), Person("Yang Lei", "杨磊", False),
    Person("Zhao Min", "赵敏", True), Person("Huang Tao", "黄涛", False), Person("Zhou Ting", "周婷", True),
    Person("Wu Qiang", "吴强", False), Person("Xu Li", "徐丽", True), Person("Sun Hao", "孙浩", False),
    Person("Ma Xue", "马雪", True), Person("Zhu Jun", "朱军", False), Person("Hu Yue", "胡月", True),
    Person("Guo Ming", "郭明", False), Person("Lin Yan", "林燕", True), Person("He Yong", "何勇", False),
]  # fmt: skip

EMOTIONS: dict[str, str] = {
    "happy": "开心", "sad": "难过", "angry": "生气", "afraid": "害怕", "surprised": "惊讶",
    "proud": "骄傲", "embarrassed": "尴尬", "worried": "担心", "grateful": "感激",
    "jealous": "嫉妒", "relieved": "欣慰", "lonely": "孤独",
}  # fmt: skip


@dataclass(frozen=True)
class Event:
    """Something that happens to a person; `en` is in the past tense after a subject and may
    use {poss} (his/her), `en_first` is the first-person form a user tells a chatbot."""

    en: str
    en_first: str
    zh: str
    weights: dict[str, float]


EVENTS = [
    Event("lost {poss} wallet on the bus", "I lost my wallet on the bus", "在公交车上丢了钱包",
          {"worried": 0.45, "sad": 0.3, "angry": 0.2, "afraid": 0.05}),
    Event("got a gift from an old friend", "I got a gift from an old friend", "收到了老朋友寄来的礼物",
          {"happy": 0.45, "grateful": 0.4, "surprised": 0.15}),
    Event("failed an important exam", "I failed an important exam", "重要的考试没有通过",
          {"sad": 0.45, "worried": 0.3, "embarrassed": 0.2, "angry": 0.05}),
    Event("won a prize at school", "I won a prize at school", "在学校得了奖",
          {"proud": 0.5, "happy": 0.4, "surprised": 0.1}),
    Event("was laughed at in a meeting", "People laughed at me in a meeting", "在会议上被人嘲笑",
          {"embarrassed": 0.5, "angry": 0.3, "sad": 0.2}),
    Event("heard a strange noise at night", "I heard a strange noise at night", "夜里听到了奇怪的声音",
          {"afraid": 0.7, "surprised": 0.2, "worried": 0.1}),
    Event("saw a friend get the job {subj} wanted", "My friend got the job I wanted", "看到朋友得到了自己想要的工作",
          {"jealous": 0.5, "sad": 0.3, "happy": 0.2}),
    Event("moved to a new city alone", "I moved to a new city alone", "独自搬到了一个新的城市",
          {"lonely": 0.5, "worried": 0.3, "afraid": 0.2}),
    Event("learned that the test results were fine", "The doctor said my test results are fine", "得知检查结果一切正常",
          {"relieved": 0.65, "happy": 0.3, "grateful": 0.05}),
    Event("was helped by a stranger in the rain", "A stranger helped me in the rain", "在雨中得到了陌生人的帮助",
          {"grateful": 0.6, "happy": 0.3, "surprised": 0.1}),
    Event("had {poss} bike stolen", "Someone stole my bike", "自行车被偷了",
          {"angry": 0.6, "sad": 0.3, "worried": 0.1}),
    Event("came home to a surprise party", "My friends threw me a surprise party",
          "回家时发现朋友们准备了惊喜派对",
          {"surprised": 0.5, "happy": 0.4, "grateful": 0.1}),
    Event("was not invited on a trip with friends", "My friends went on a trip without me",
          "朋友们出去旅行没有叫上自己",
          {"sad": 0.4, "lonely": 0.4, "angry": 0.2}),
    Event("finished a hard project on time", "I finished a hard project on time", "按时完成了一个很难的项目",
          {"proud": 0.45, "relieved": 0.4, "happy": 0.15}),
    Event("spent the holiday alone", "I spent the holiday alone", "一个人过了节日",
          {"lonely": 0.6, "sad": 0.35, "worried": 0.05}),
    Event("got lost in a dark forest", "I got lost in a dark forest", "在黑暗的森林里迷了路",
          {"afraid": 0.6, "worried": 0.35, "lonely": 0.05}),
    Event("was blamed for a mistake {subj} did not make", "I was blamed for a mistake I did not make",
          "被冤枉犯了一个错误",
          {"angry": 0.6, "sad": 0.3, "embarrassed": 0.1}),
    Event("found {poss} lost dog", "I found my lost dog", "找到了走丢的小狗",
          {"relieved": 0.55, "happy": 0.4, "grateful": 0.05}),
]  # fmt: skip

# Products and how people judge them, for reviews (the sentiment benchmark).
PRODUCTS = [
    ("phone", "手机"), ("book", "书"), ("jacket", "外套"), ("lamp", "台灯"), ("backpack", "背包"),
    ("headphones", "耳机"), ("kettle", "水壶"), ("watch", "手表"), ("chair", "椅子"), ("camera", "相机"),
    ("keyboard", "键盘"), ("umbrella", "雨伞"),
]  # fmt: skip
POSITIVE = [
    ("works very well", "非常好用"), ("is worth the money", "物有所值"), ("arrived quickly", "到货很快"),
    ("looks beautiful", "很漂亮"), ("is well made", "做工很好"), ("is easy to use", "用起来很方便"),
]  # fmt: skip
NEGATIVE = [
    ("broke after two days", "用了两天就坏了"), ("is a waste of money", "太不值了"),
    ("arrived very late", "到货太慢了"),
    ("looks cheap", "看起来很廉价"), ("is badly made", "做工很差"), ("is hard to use", "用起来很麻烦"),
]  # fmt: skip
VERDICT = {
    "Positive": [("I am very happy with it.", "我很满意。"), ("I would buy it again.", "我还会再买。"),
                 ("Highly recommended.", "强烈推荐。")],
    "Negative": [("I am very disappointed.", "我很失望。"), ("I will not buy it again.", "我不会再买了。"),
                 ("Do not buy it.", "不要买。")],
}  # fmt: skip

# News events for short news texts and their headlines (the summarization benchmark).
NEWS_EVENTS = [
    ("a music festival", "音乐节"), ("a marathon", "马拉松比赛"), ("a technology fair", "科技展"),
    ("a food festival", "美食节"), ("a book fair", "书展"), ("a film festival", "电影节"),
    ("a flower show", "花展"), ("a chess tournament", "国际象棋比赛"),
]  # fmt: skip
OCCUPATIONS = [
    ("doctor", "医生"), ("teacher", "老师"), ("engineer", "工程师"), ("farmer", "农民"), ("painter", "画家"),
    ("cook", "厨师"), ("nurse", "护士"), ("driver", "司机"), ("writer", "作家"), ("pilot", "飞行员"),
]  # fmt: skip
HOBBIES = [
    ("playing the piano", "弹钢琴"), ("swimming", "游泳"), ("reading novels", "看小说"), ("hiking", "爬山"),
    ("cooking", "做饭"), ("taking photos", "拍照"), ("playing chess", "下棋"), ("growing flowers", "种花"),
]  # fmt: skip
# Countable things for word problems: (singular, plural, Chinese noun, Chinese measure word).
THINGS = [
    ("apple", "apples", "苹果", "个"), ("book", "books", "书", "本"), ("pencil", "pencils", "铅笔", "支"),
    ("egg", "eggs", "鸡蛋", "个"), ("card", "cards", "卡片", "张"), ("flower", "flowers", "花", "朵"),
    ("stamp", "stamps", "邮票", "张"), ("cup", "cups", "杯子", "个"), ("ball", "balls", "球", "个"),
]  # fmt: skip
