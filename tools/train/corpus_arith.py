"""Generated arithmetic word problems in GSM8K's exact format.

A problem is (question, answer): the answer is the worked steps, one calculation per line with
GSM8K's calculator annotation `a op b = <<a op b=r>>r`, then a final line `#### r`. The document
the model trains on is `question + "\\n" + answer`; `whittle eval --task arith|gsm8k` prompts with
`question + "\\n"` and reads the number after `####`.

One-step problems need one calculation (+, -, *, / with exact results), two-step problems two.
Numbers are small (operands up to ~100, factors/divisors 2..12). Every template has several
phrasings for both question and answer, and the people, objects, places, activities and units are
drawn from lists, so that what the model has to learn is the arithmetic rather than the template.
All randomness comes from the `random.Random` passed in.
"""

import random

NAMES = [
    ("Maria", "f"), ("Tom", "m"), ("Aisha", "f"), ("James", "m"), ("Lena", "f"), ("Omar", "m"),
    ("Sofia", "f"), ("Ben", "m"), ("Priya", "f"), ("Lucas", "m"), ("Emma", "f"), ("Noah", "m"),
    ("Chen", "m"), ("Mei", "f"), ("Carlos", "m"), ("Ana", "f"), ("Yuki", "f"), ("Kenji", "m"),
    ("Fatima", "f"), ("Ali", "m"), ("Olivia", "f"), ("Liam", "m"), ("Zoe", "f"), ("Ethan", "m"),
    ("Grace", "f"), ("Samuel", "m"), ("Hannah", "f"), ("David", "m"), ("Nadia", "f"), ("Ivan", "m"),
    ("Chloe", "f"), ("Marco", "m"), ("Julia", "f"), ("Peter", "m"), ("Rosa", "f"), ("Hugo", "m"),
    ("Ines", "f"), ("Felix", "m"), ("Amara", "f"), ("Kwame", "m"), ("Leila", "f"), ("Raj", "m"),
    ("Nina", "f"), ("Oscar", "m"), ("Clara", "f"), ("Leo", "m"), ("Sara", "f"), ("Max", "m"),
    ("Eva", "f"), ("Jack", "m"), ("Lily", "f"), ("Adam", "m"), ("Mia", "f"), ("Daniel", "m"),
    ("Alice", "f"), ("Victor", "m"), ("Rita", "f"), ("Paul", "m"), ("Tara", "f"), ("Mark", "m"),
]

# (singular, plural)
OBJECTS = [
    ("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("pencil", "pencils"),
    ("book", "books"), ("cookie", "cookies"), ("orange", "oranges"), ("card", "cards"),
    ("shell", "shells"), ("stamp", "stamps"), ("balloon", "balloons"), ("toy car", "toy cars"),
    ("crayon", "crayons"), ("egg", "eggs"), ("flower", "flowers"), ("candy", "candies"),
    ("coin", "coins"), ("button", "buttons"), ("ribbon", "ribbons"), ("banana", "bananas"),
    ("cupcake", "cupcakes"), ("muffin", "muffins"), ("rock", "rocks"), ("feather", "feathers"),
    ("bead", "beads"), ("puzzle", "puzzles"), ("comic", "comics"), ("plum", "plums"),
    ("lemon", "lemons"), ("peach", "peaches"), ("notebook", "notebooks"), ("toy", "toys"),
    ("sandwich", "sandwiches"), ("bottle", "bottles"), ("cup", "cups"), ("plate", "plates"),
    ("shirt", "shirts"), ("sock", "socks"), ("ticket", "tickets"), ("brick", "bricks"),
    ("nail", "nails"), ("seed", "seeds"), ("leaf", "leaves"), ("potato", "potatoes"),
    ("tomato", "tomatoes"), ("carrot", "carrots"), ("strawberry", "strawberries"), ("pear", "pears"),
    ("photo", "photos"), ("postcard", "postcards"), ("paper clip", "paper clips"),
    ("eraser", "erasers"), ("magnet", "magnets"), ("candle", "candles"), ("cherry", "cherries"),
]

# (container singular, container plural)
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("pack", "packs"), ("basket", "baskets"),
              ("jar", "jars"), ("crate", "crates"), ("tray", "trays"), ("carton", "cartons"),
              ("bucket", "buckets"), ("case", "cases")]

PLACES = [("kitchen", "garden"), ("red box", "blue box"), ("classroom", "library"),
          ("first shelf", "second shelf"), ("fridge", "cupboard"), ("left drawer", "right drawer"),
          ("big basket", "small basket"), ("shop", "warehouse"), ("car", "house"),
          ("first bag", "second bag"), ("attic", "basement"), ("front yard", "back yard")]

# (past, base, third person, plural noun)
ACTIVITIES = [
    ("baked", "bake", "bakes", "cookies"), ("read", "read", "reads", "pages"),
    ("wrote", "write", "writes", "letters"), ("sold", "sell", "sells", "tickets"),
    ("picked", "pick", "picks", "apples"), ("painted", "paint", "paints", "pictures"),
    ("ran", "run", "runs", "miles"), ("swam", "swim", "swims", "laps"),
    ("folded", "fold", "folds", "paper cranes"), ("planted", "plant", "plants", "trees"),
    ("knitted", "knit", "knits", "scarves"), ("washed", "wash", "washes", "dishes"),
    ("solved", "solve", "solves", "puzzles"), ("made", "make", "makes", "sandwiches"),
    ("collected", "collect", "collects", "shells"), ("caught", "catch", "catches", "fish"),
    ("delivered", "deliver", "delivers", "parcels"), ("fixed", "fix", "fixes", "bikes"),
    ("walked", "walk", "walks", "kilometers"), ("typed", "type", "types", "pages"),
    ("cooked", "cook", "cooks", "meals"), ("drew", "draw", "draws", "sketches"),
    ("answered", "answer", "answers", "emails"), ("sewed", "sew", "sews", "buttons"),
]

# (singular, plural) items with a price
ITEMS = [("notebook", "notebooks"), ("pen", "pens"), ("ticket", "tickets"), ("sandwich", "sandwiches"),
         ("toy", "toys"), ("book", "books"), ("cake", "cakes"), ("shirt", "shirts"), ("hat", "hats"),
         ("ball", "balls"), ("lamp", "lamps"), ("plant", "plants"), ("mug", "mugs"),
         ("game", "games"), ("scarf", "scarves"), ("kite", "kites"), ("pie", "pies"),
         ("bracelet", "bracelets"), ("poster", "posters"), ("bottle of juice", "bottles of juice")]

VEHICLES = [("car", "kilometers"), ("train", "kilometers"), ("bus", "miles"), ("truck", "miles"),
            ("bike", "kilometers"), ("boat", "miles"), ("ship", "kilometers"),
            ("tractor", "kilometers"), ("horse", "miles"), ("plane", "hundred miles")]

# (group noun plural, seat vehicle singular, plural)
GROUPS = [("students", "van", "vans"), ("people", "car", "cars"), ("children", "boat", "boats"),
          ("players", "bus", "buses"), ("guests", "table", "tables"), ("campers", "tent", "tents"),
          ("workers", "elevator trip", "elevator trips"), ("scouts", "canoe", "canoes")]

GAIN = ["buys", "finds", "gets", "is given", "receives", "collects", "wins", "picks up"]
GAIN_PAST = ["bought", "found", "got", "was given", "received", "collected", "won", "picked up"]
LOSE_PAST = ["gave away", "lost", "used", "sold", "ate", "broke", "donated", "threw away"]
TOTAL_Q = ["How many {o} are there altogether?", "How many {o} are there in total?",
           "What is the total number of {o}?", "How many {o} are there in all?"]


def pron(n):
    return {"f": ("she", "her", "She", "Her"), "m": ("he", "his", "He", "His")}[n[1]]


def calc(a, op, b):
    """GSM8K calculation text and its value: '7 + 5 = <<7+5=12>>12'."""
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    else:
        assert a % b == 0, (a, b)
        r = a // b
    return f"{a} {op} {b} = <<{a}{op}{b}={r}>>{r}", r


def money_calc(a, op, b):
    """Money variant as GSM8K writes it: '$5 * 3 = $<<5*3=15>>15'."""
    t, r = calc(a, op, b)
    left, _, right = t.partition(" = ")
    if op in "+-":
        left = f"${a} {op} ${b}"
    else:
        left = f"${a} {op} {b}"
    return f"{left} = ${right}", r


class Gen:
    def __init__(self, rng: random.Random):
        self.r = rng

    # --- helpers
    def c(self, seq):
        return self.r.choice(seq)

    def n(self, lo, hi):
        return self.r.randint(lo, hi)

    def two_names(self):
        a, b = self.r.sample(NAMES, 2)
        return a, b

    def obj(self):
        return self.c(OBJECTS)

    def small(self):
        return self.n(2, 12)

    def addend(self):
        return self.n(2, 60) if self.r.random() < 0.8 else self.n(10, 99)

    # --- one-step templates: each returns (question, [lines], answer)
    def add_more(self):
        p = self.c(NAMES); s, _, S, _ = pron(p); o = self.obj()[1]; a, b = self.addend(), self.addend()
        t, r = calc(a, "+", b)
        q = self.c([f"{p[0]} has {a} {o}. {S} {self.c(GAIN)} {b} more. How many {o} does {p[0]} have now?",
                    f"{p[0]} had {a} {o}, then {s} {self.c(GAIN_PAST)} {b} more {o}. How many {o} does {s} have now?",
                    f"There were {a} {o} in a box. {p[0]} put {b} more {o} in the box. How many {o} are in the box now?"])
        if q.startswith("There were"):
            ans = self.c([f"Now there are {t} {o} in the box.", f"{t}"])
        else:
            ans = self.c([f"{p[0]} has {t} {o} now.", f"Now {s} has {t} {o}.", f"{t}"])
        return q, [ans], r

    def add_places(self):
        (l1, l2), o, a, b = self.c(PLACES), self.obj()[1], self.addend(), self.addend()
        t, r = calc(a, "+", b)
        q = f"There are {a} {o} in the {l1} and {b} {o} in the {l2}. " + self.c(TOTAL_Q).format(o=o)
        return q, [self.c([f"There are {t} {o} altogether.", f"In total there are {t} {o}.",
                           f"{a} {o} + {b} {o} = <<{a}+{b}={r}>>{r} {o}"])], r

    def add_people(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; a, b = self.addend(), self.addend()
        t, r = calc(a, "+", b)
        q = self.c([f"{p1[0]} has {a} {o} and {p2[0]} has {b} {o}. How many {o} do they have together?",
                    f"{p1[0]} owns {a} {o}. {p2[0]} owns {b} {o}. How many {o} do the two of them own in total?"])
        return q, [self.c([f"Together they have {t} {o}.", f"They have {t} {o} in total."])], r

    def add_days(self):
        p = self.c(NAMES); s = pron(p)[0]; act = self.c(ACTIVITIES); a, b = self.addend(), self.addend()
        d1, d2 = self.c([("on Monday", "on Tuesday"), ("on Saturday", "on Sunday"),
                         ("in the morning", "in the afternoon"), ("during the first week", "during the second week"),
                         ("in June", "in July"), ("yesterday", "today"), ("last week", "this week")])
        t, r = calc(a, "+", b)
        q = f"{p[0]} {act[0]} {a} {act[3]} {d1} and {b} {act[3]} {d2}. How many {act[3]} did {s} {act[1]} in all?"
        return q, [f"{p[0]} {act[0]} {t} {act[3]} in all."], r

    def add_more_than(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; a, b = self.addend(), self.n(2, 30)
        t, r = calc(a, "+", b)
        q = f"{p1[0]} has {a} {o}. {p2[0]} has {b} more {o} than {p1[0]}. How many {o} does {p2[0]} have?"
        return q, [f"{p2[0]} has {t} {o}."], r

    def add_age(self):
        p = self.c(NAMES); s = pron(p)[0]; a, b = self.n(3, 70), self.n(2, 25)
        t, r = calc(a, "+", b)
        q = self.c([f"{p[0]} is {a} years old. How old will {s} be in {b} years?",
                    f"{p[0]} was {a} years old {b} years ago. How old is {s} now?"])
        return q, [f"{p[0]} will be {t} years old." if "will" in q else f"{p[0]} is {t} years old now."], r

    def add_money(self):
        p = self.c(NAMES); s, h, S, _ = pron(p); a, b = self.addend(), self.addend()
        t, r = money_calc(a, "+", b)
        q = self.c([f"{p[0]} has ${a} in {h} wallet. {S} earns ${b} more. How much money does {s} have now?",
                    f"A shirt costs ${a} and a hat costs ${b}. How much do the shirt and the hat cost together?"])
        return q, [f"The total is {t}." if "shirt" in q else f"{p[0]} has {t} now."], r

    def sub_give(self):
        p1, p2 = self.two_names(); s, _, S, _ = pron(p1); o = self.obj()[1]
        a = self.n(10, 99); b = self.n(1, a - 1)
        t, r = calc(a, "-", b)
        verb = self.c(LOSE_PAST)
        q = self.c([f"{p1[0]} had {a} {o}. {S} gave {b} of them to {p2[0]}. How many {o} does {p1[0]} have left?",
                    f"{p1[0]} had {a} {o} and {verb} {b} of them. How many {o} does {s} have now?",
                    f"There were {a} {o} on the table. {p1[0]} took {b} of them. How many {o} are left on the table?"])
        if "table" in q:
            return q, [self.c([f"There are {t} {o} left on the table.", f"{t} {o} are left."])], r
        return q, [self.c([f"{p1[0]} has {t} {o} left.", f"{p1[0]} now has {t} {o}."])], r

    def sub_compare(self):
        p1, p2 = self.two_names(); o = self.obj()[1]
        a = self.n(10, 99); b = self.n(1, a - 1)
        t, r = calc(a, "-", b)
        q = self.c([f"{p1[0]} has {a} {o} and {p2[0]} has {b} {o}. How many more {o} does {p1[0]} have than {p2[0]}?",
                    f"{p1[0]} has {a} {o}. {p2[0]} has {a - b} fewer {o} than {p1[0]}. How many {o} does {p2[0]} have?"])
        if "fewer" in q:
            t, r = calc(a, "-", a - b)
            return q, [f"{p2[0]} has {t} {o}."], r
        return q, [f"{p1[0]} has {t} more {o} than {p2[0]}."], r

    def sub_money(self):
        p = self.c(NAMES); s = pron(p)[0]; item = self.c(ITEMS)[0]
        a = self.n(10, 99); b = self.n(1, a - 1)
        t, r = money_calc(a, "-", b)
        q = f"{p[0]} had ${a} and spent ${b} on a {item}. How much money does {s} have left?"
        return q, [f"{p[0]} has {t} left."], r

    def sub_remaining(self):
        p = self.c(NAMES); s = pron(p)[0]; a = self.n(20, 99); b = self.n(1, a - 1)
        kind = self.c([("A book has {a} pages. {n} has read {b} pages. How many pages does {s} still have to read?",
                        "{n} still has to read {t} pages."),
                       ("A trip is {a} kilometers long. {n} has already driven {b} kilometers. How many kilometers are left?",
                        "There are {t} kilometers left."),
                       ("The temperature was {a} degrees in the afternoon. By night it had dropped by {b} degrees. What was the temperature at night?",
                        "The temperature at night was {t} degrees."),
                       ("A jar holds {a} liters of water. {n} pours out {b} liters. How many liters are left in the jar?",
                        "There are {t} liters left in the jar."),
                       ("A school has {a} students. {b} of them are absent today. How many students are at school today?",
                        "There are {t} students at school today.")])
        t, r = calc(a, "-", b)
        return kind[0].format(a=a, b=b, n=p[0], s=s), [kind[1].format(t=t, n=p[0])], r

    def mul_packs(self):
        p = self.c(NAMES); o = self.obj()[1]; cs, cp = self.c(CONTAINERS); a, b = self.small(), self.small()
        t, r = calc(a, "*", b)
        q = self.c([f"{p[0]} buys {a} {cp} of {o}. Each {cs} has {b} {o}. How many {o} does {p[0]} buy?",
                    f"There are {a} {cp} with {b} {o} in each {cs}. How many {o} are there?",
                    f"Each {cs} holds {b} {o}. How many {o} are in {a} {cp}?"])
        return q, [self.c([f"There are {t} {o}.", f"{p[0]} buys {t} {o}." if "buys" in q else f"That is {t} {o}."])], r

    def mul_rate(self):
        p = self.c(NAMES); s = pron(p)[0]; act = self.c(ACTIVITIES); a, b = self.small(), self.small()
        t, r = calc(a, "*", b)
        per = self.c([("day", "days"), ("week", "weeks"), ("hour", "hours"), ("month", "months")])
        q = f"{p[0]} {act[2]} {a} {act[3]} every {per[0]}. How many {act[3]} does {s} {act[1]} in {b} {per[1]}?"
        return q, [self.c([f"In {b} {per[1]} {s} {act[2]} {t} {act[3]}.", f"{p[0]} {act[2]} {a} * {b} = <<{a}*{b}={r}>>{r} {act[3]}."])], r

    def mul_price(self):
        item = self.c(ITEMS); a, b = self.n(2, 15), self.small()
        t, r = money_calc(a, "*", b)
        q = self.c([f"One {item[0]} costs ${a}. How much do {b} {item[1]} cost?",
                    f"A shop sells {item[1]} for ${a} each. How much does it cost to buy {b} {item[1]}?"])
        return q, [f"{b} {item[1]} cost {t}."], r

    def mul_rows(self):
        a, b = self.small(), self.small()
        thing = self.c([("rows of chairs", "chairs in each row", "chairs"), ("rows of trees", "trees in each row", "trees"),
                        ("shelves", "books on each shelf", "books"), ("tables", "guests at each table", "guests"),
                        ("pages", "stamps on each page", "stamps"), ("rows of seats", "seats in each row", "seats")])
        t, r = calc(a, "*", b)
        q = f"There are {a} {thing[0]} with {b} {thing[1]}. How many {thing[2]} are there?"
        return q, [f"There are {t} {thing[2]}."], r

    def mul_speed(self):
        v, unit = self.c(VEHICLES); a, b = self.n(2, 60), self.n(2, 9)
        unit = unit if unit != "hundred miles" else "miles"
        t, r = calc(a, "*", b)
        q = f"A {v} travels {a} {unit} per hour. How far does it travel in {b} hours?"
        return q, [f"In {b} hours it travels {t} {unit}."], r

    def mul_times(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; a, b = self.n(2, 15), self.n(2, 6)
        t, r = calc(a, "*", b)
        times = {2: "twice", 3: "three times"}.get(b, f"{b} times") if self.r.random() < 0.5 else f"{b} times"
        q = f"{p1[0]} has {a} {o}. {p2[0]} has {times} as many {o} as {p1[0]}. How many {o} does {p2[0]} have?"
        return q, [f"{p2[0]} has {a} * {b} = <<{a}*{b}={r}>>{r} {o}." if self.r.random() < 0.5 else f"{p2[0]} has {t} {o}."], r

    def mul_save(self):
        p = self.c(NAMES); s = pron(p)[0]; a, b = self.n(2, 20), self.small()
        t, r = money_calc(a, "*", b)
        q = self.c([f"{p[0]} saves ${a} every week. How much money will {s} have saved after {b} weeks?",
                    f"{p[0]} earns ${a} per hour. How much does {s} earn for {b} hours of work?"])
        return q, [f"{p[0]} will have {t}." if "saves" in q else f"{p[0]} earns {t}."], r

    def mul_legs(self):
        animal, legs = self.c([("dogs", 4), ("spiders", 8), ("chickens", 2), ("cats", 4), ("ants", 6),
                               ("cars", 4), ("bicycles", 2), ("tricycles", 3), ("horses", 4), ("ducks", 2)])
        part = "wheels" if animal in ("cars", "bicycles", "tricycles") else "legs"
        a = self.n(2, 20)
        t, r = calc(a, "*", legs)
        q = f"How many {part} do {a} {animal} have in total?" if self.r.random() < 0.5 else \
            f"There are {a} {animal} in the yard. How many {part} are there?"
        return q, [f"Each has {legs} {part}, so there are {t} {part}."], r

    def div_share(self):
        p = self.c(NAMES); s = pron(p)[0]; o = self.obj()[1]; b, qv = self.small(), self.small(); a = b * qv
        t, r = calc(a, "/", b)
        q = self.c([f"{p[0]} has {a} {o} and shares them equally among {b} friends. How many {o} does each friend get?",
                    f"{a} {o} are divided equally between {b} children. How many {o} does each child get?",
                    f"{p[0]} puts {a} {o} into {b} equal groups. How many {o} are in each group?"])
        return q, [self.c([f"Each gets {t} {o}.", f"There are {t} {o} in each group." if "groups" in q else f"Each one gets {t} {o}."])], r

    def div_boxes(self):
        p = self.c(NAMES); s = pron(p)[0]; o = self.obj()[1]; cs, cp = self.c(CONTAINERS)
        b, qv = self.small(), self.small(); a = b * qv
        t, r = calc(a, "/", b)
        q = f"{p[0]} packs {a} {o} into {cp} of {b}. How many {cp} does {s} fill?"
        return q, [f"{p[0]} fills {t} {cp}."], r

    def div_seats(self):
        g, vs, vp = self.c(GROUPS); b, qv = self.n(2, 10), self.small(); a = b * qv
        t, r = calc(a, "/", b)
        q = f"There are {a} {g}. Each {vs} can take {b} {g}. How many {vp} are needed for all of them?"
        return q, [f"They need {t} {vp}."], r

    def div_price(self):
        item = self.c(ITEMS); b, qv = self.small(), self.n(2, 15); a = b * qv
        t, r = money_calc(a, "/", b)
        q = f"{b} {item[1]} cost ${a} in total. How much does one {item[0]} cost?"
        return q, [f"One {item[0]} costs {t}."], r

    def div_rate(self):
        p = self.c(NAMES); s = pron(p)[0]; act = self.c(ACTIVITIES); b, qv = self.small(), self.small(); a = b * qv
        t, r = calc(a, "/", b)
        q = f"{p[0]} {act[0]} {a} {act[3]} in {b} days, the same number each day. How many {act[3]} did {s} {act[1]} each day?"
        return q, [f"{p[0]} {act[0]} {t} {act[3]} each day."], r

    def div_half(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; b = self.c([2, 2, 3, 4]); qv = self.n(2, 30); a = b * qv
        frac = {2: "half", 3: "a third", 4: "a quarter"}[b]
        t, r = calc(a, "/", b)
        q = f"{p1[0]} has {a} {o}. {pron(p1)[2]} gives {frac} of them to {p2[0]}. How many {o} does {p2[0]} get?"
        return q, [f"{p2[0]} gets {t} {o}."], r

    def div_speed(self):
        v, unit = self.c(VEHICLES); unit = unit if unit != "hundred miles" else "miles"
        b, qv = self.n(2, 8), self.n(5, 60); a = b * qv
        t, r = calc(a, "/", b)
        q = f"A {v} travels {a} {unit} in {b} hours at a steady speed. How many {unit} does it travel each hour?"
        return q, [f"It travels {t} {unit} each hour."], r

    # --- two-step templates
    def two_gain_lose(self):
        p1, p2 = self.two_names(); s, _, S, _ = pron(p1); o = self.obj()[1]
        a, b = self.addend(), self.addend(); c = self.n(1, a + b - 1)
        t1, r1 = calc(a, "+", b); t2, r2 = calc(r1, "-", c)
        q = self.c([f"{p1[0]} has {a} {o}. {S} {self.c(GAIN)} {b} more and then gives {c} to {p2[0]}. How many {o} does {p1[0]} have now?",
                    f"{p1[0]} had {a} {o}. {S} {self.c(GAIN_PAST)} {b} more {o} and later {self.c(LOSE_PAST)} {c}. How many {o} does {s} have now?"])
        return q, [f"After getting more, {p1[0]} has {t1} {o}.", f"Then {s} has {t2} {o} left."], r2

    def two_lose_gain(self):
        p = self.c(NAMES); s, _, S, _ = pron(p); o = self.obj()[1]
        a = self.n(10, 90); b = self.n(1, a - 1); c = self.addend()
        t1, r1 = calc(a, "-", b); t2, r2 = calc(r1, "+", c)
        q = f"There were {a} {o} in a basket. {p[0]} took out {b} {o} and then put in {c} new ones. How many {o} are in the basket now?"
        return q, [f"After taking some out there were {t1} {o}.", f"After putting some in there are {t2} {o}."], r2

    def two_packs_plus(self):
        p = self.c(NAMES); s, h, S, _ = pron(p); o = self.obj()[1]; cs, cp = self.c(CONTAINERS)
        a, b, c = self.small(), self.small(), self.addend()
        t1, r1 = calc(a, "*", b); t2, r2 = calc(r1, "+", c)
        q = f"{p[0]} already has {c} {o}. {S} buys {a} {cp} of {o} with {b} {o} in each {cs}. How many {o} does {s} have now?"
        return q, [f"The {cp} hold {t1} {o}.", f"{p[0]} now has {t2} {o}."], r2

    def two_packs_minus(self):
        p = self.c(NAMES); s, _, S, _ = pron(p); o = self.obj()[1]; cs, cp = self.c(CONTAINERS)
        a, b = self.small(), self.small(); c = self.n(1, a * b - 1)
        t1, r1 = calc(a, "*", b); t2, r2 = calc(r1, "-", c)
        q = f"{p[0]} bought {a} {cp} of {o}. Each {cs} had {b} {o}. Later {s} {self.c(LOSE_PAST)} {c} of them. How many {o} are left?"
        return q, [f"{p[0]} bought {t1} {o}.", f"There are {t2} {o} left."], r2

    def two_pool_share(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; c, qv = self.small(), self.small(); total = c * qv
        a = self.n(1, total - 1); b = total - a
        t1, r1 = calc(a, "+", b); t2, r2 = calc(r1, "/", c)
        q = f"{p1[0]} has {a} {o} and {p2[0]} has {b} {o}. They put them together and share them equally among {c} people. How many {o} does each person get?"
        return q, [f"Together they have {t1} {o}.", f"Each person gets {t2} {o}."], r2

    def two_boxes_share(self):
        o = self.obj()[1]; cs, cp = self.c(CONTAINERS); c = self.n(2, 10); qv = self.n(2, 12)
        total = c * qv
        divs = [a for a in range(2, 13) if total % a == 0 and 2 <= total // a <= 15]
        if not divs:
            return self.two_pool_share()
        a = self.c(divs); b = total // a
        t1, r1 = calc(a, "*", b); t2, r2 = calc(r1, "/", c)
        q = f"A teacher has {a} {cp} of {o} with {b} {o} in each {cs}. She shares all the {o} equally among {c} students. How many {o} does each student get?"
        return q, [f"There are {t1} {o}.", f"Each student gets {t2} {o}."], r2

    def two_discount(self):
        p = self.c(NAMES); s = pron(p)[0]; item = self.c(ITEMS)
        a = self.n(5, 30); b = self.n(1, a - 2); c = self.small()
        t1, r1 = money_calc(a, "-", b); t2, r2 = money_calc(r1, "*", c)
        q = f"A {item[0]} usually costs ${a}, but today it is ${b} cheaper. How much does {p[0]} pay for {c} {item[1]} today?"
        return q, [f"Today one {item[0]} costs {t1}.", f"{c} {item[1]} cost {t2}."], r2

    def two_unit_price(self):
        item = self.c(ITEMS); b, u = self.small(), self.n(2, 12); a = b * u; c = self.small()
        t1, r1 = money_calc(a, "/", b); t2, r2 = money_calc(r1, "*", c)
        q = f"{b} {item[1]} cost ${a}. How much do {c} {item[1]} cost?"
        return q, [f"One {item[0]} costs {t1}.", f"{c} {item[1]} cost {t2}."], r2

    def two_times_total(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; a, b = self.n(2, 15), self.n(2, 5)
        t1, r1 = calc(a, "*", b); t2, r2 = calc(a, "+", r1)
        q = f"{p1[0]} has {a} {o}. {p2[0]} has {b} times as many {o} as {p1[0]}. How many {o} do they have together?"
        return q, [f"{p2[0]} has {t1} {o}.", f"Together they have {t2} {o}."], r2

    def two_more_total(self):
        p1, p2 = self.two_names(); o = self.obj()[1]; a, b = self.addend(), self.n(2, 30)
        t1, r1 = calc(a, "+", b); t2, r2 = calc(a, "+", r1)
        q = f"{p1[0]} has {a} {o}. {p2[0]} has {b} more {o} than {p1[0]}. How many {o} do they have altogether?"
        return q, [f"{p2[0]} has {t1} {o}.", f"Altogether they have {t2} {o}."], r2

    def two_spend(self):
        p = self.c(NAMES); s = pron(p)[0]; item = self.c(ITEMS); a, b = self.small(), self.n(2, 9)
        cost = a * b; total = cost + self.n(0, 60)
        t1, r1 = money_calc(a, "*", b); t2, r2 = money_calc(total, "-", r1)
        q = f"{p[0]} has ${total}. {pron(p)[2]} buys {a} {item[1]} that cost ${b} each. How much money does {s} have left?"
        return q, [f"The {item[1]} cost {t1}.", f"{p[0]} has {t2} left."], r2

    def two_lose_share(self):
        p = self.c(NAMES); s, _, S, _ = pron(p); o = self.obj()[1]
        c, qv = self.small(), self.small(); rest = c * qv; b = self.n(1, 20); a = rest + b
        t1, r1 = calc(a, "-", b); t2, r2 = calc(r1, "/", c)
        q = f"{p[0]} baked {a} {o}. {S} ate {b} of them and shared the rest equally among {c} friends. How many {o} did each friend get?" \
            if o in ("cookies", "cupcakes", "muffins") else \
            f"{p[0]} had {a} {o}. {S} lost {b} of them and put the rest into {c} equal piles. How many {o} are in each pile?"
        return q, [f"{p[0]} had {t1} {o} left.", f"Each {'friend got' if 'friends' in q else 'pile has'} {t2} {o}."], r2

    def two_wage(self):
        p = self.c(NAMES); s, _, S, _ = pron(p); a, b = self.n(5, 20), self.n(2, 9); c = self.n(1, a * b - 1)
        t1, r1 = money_calc(a, "*", b); t2, r2 = money_calc(r1, "-", c)
        q = f"{p[0]} earns ${a} an hour and works {b} hours. {S} spends ${c} on lunch. How much money does {s} have left from the work?"
        return q, [f"{p[0]} earns {t1}.", f"After lunch {s} has {t2} left."], r2

    def two_rate_plus(self):
        p = self.c(NAMES); s = pron(p)[0]; act = self.c(ACTIVITIES); a, b, c = self.small(), self.n(2, 7), self.addend()
        t1, r1 = calc(a, "*", b); t2, r2 = calc(r1, "+", c)
        q = f"{p[0]} {act[2]} {a} {act[3]} each day for {b} days, and then {c} more {act[3]} on the last weekend. How many {act[3]} does {s} {act[1]} in total?"
        return q, [f"In {b} days {s} {act[2]} {t1} {act[3]}.", f"In total {s} {act[2]} {t2} {act[3]}."], r2

    ONE = ["add_more", "add_places", "add_people", "add_days", "add_more_than", "add_age", "add_money",
           "sub_give", "sub_compare", "sub_money", "sub_remaining",
           "mul_packs", "mul_rate", "mul_price", "mul_rows", "mul_speed", "mul_times", "mul_save", "mul_legs",
           "div_share", "div_boxes", "div_seats", "div_price", "div_rate", "div_half", "div_speed"]
    TWO = ["two_gain_lose", "two_lose_gain", "two_packs_plus", "two_packs_minus", "two_pool_share",
           "two_boxes_share", "two_discount", "two_unit_price", "two_times_total", "two_more_total",
           "two_spend", "two_lose_share", "two_wage", "two_rate_plus"]

    def one_step(self):
        return self._make(self.c(self.ONE))

    def two_step(self):
        return self._make(self.c(self.TWO))

    def _make(self, name):
        q, lines, r = getattr(self, name)()
        answer = "\n".join(lines + [f"#### {r}"])
        return {"question": q, "answer": answer, "value": r, "template": name}


def problem_text(p):
    """The training/eval document: question, newline, answer (ending with '#### N')."""
    return p["question"] + "\n" + p["answer"]


def generate(seed, n, two_step_share=0.5, exclude=frozenset()):
    """n problems (dicts with question/answer/value/template), skipping questions in `exclude`."""
    g = Gen(random.Random(seed))
    out, seen = [], set()
    while len(out) < n:
        p = g.two_step() if g.r.random() < two_step_share else g.one_step()
        if p["question"] in exclude or p["question"] in seen:
            continue
        seen.add(p["question"])
        out.append(p)
    return out
