"""SVAMP exemplars, written from problems of SVAMP's seeded train split."""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="svamp/chal-820",
        question="For 19 weeks of harvest Lewis earns a total of $ 133. How much money does he earn each week?",
        gold="7",
        text="He earns 133 dollars in 19 weeks, so each week he earns 133 / 19 = 7 dollars. The answer is 7.",
        code="def solution():\n"
             "    total = 133\n"
             "    weeks = 19\n"
             "    return total / weeks\n",
    ),
    Exemplar(
        source="svamp/chal-643",
        question="The school has 304 grades and each grade has 75 students How many students were there in total?",
        gold="22800",
        text="There are 304 grades of 75 students, so 304 * 75 = 22800 students. The answer is 22800.",
        code="def solution():\n"
             "    grades = 304\n"
             "    students_per_grade = 75\n"
             "    return grades * students_per_grade\n",
    ),
    Exemplar(
        source="svamp/chal-70",
        question="Olivia spent 78 dollars at a supermarket. If she has 33 dollars left with her How much "
                 "money did she have initially?",
        gold="111",
        text="She had what she spent plus what is left: 78 + 33 = 111 dollars. The answer is 111.",
        code="def solution():\n"
             "    spent = 78\n"
             "    left = 33\n"
             "    return spent + left\n",
    ),
    Exemplar(
        source="svamp/chal-29",
        question="A grocery store had 49 bottles of regular soda, 40 bottles of diet soda and 6 bottles of "
                 "lite soda. How many bottles of regular soda and diet soda did they have altogether?",
        gold="89",
        text="Only regular and diet soda count: 49 + 40 = 89 bottles. The answer is 89.",
        code="def solution():\n"
             "    regular = 49\n"
             "    diet = 40\n"
             "    return regular + diet\n",
    ),
    Exemplar(
        source="svamp/chal-150",
        question="There are a total of 16 peaches in a basket. If there are 13 red peaches and some more "
                 "green peaches in the basket. How many green peaches are in the basket?",
        gold="3",
        text="The peaches that are not red are green: 16 - 13 = 3. The answer is 3.",
        code="def solution():\n"
             "    total = 16\n"
             "    red = 13\n"
             "    return total - red\n",
    ),
    Exemplar(
        source="svamp/chal-396",
        question="In a school there are 706 girls and 222 boys. 418 more girls joined the school. How many "
                 "pupils are there in the school now?",
        gold="1346",
        text="There are now 706 + 418 = 1124 girls. With the 222 boys there are 1124 + 222 = 1346 pupils. "
             "The answer is 1346.",
        code="def solution():\n"
             "    girls = 706 + 418\n"
             "    boys = 222\n"
             "    return girls + boys\n",
    ),
    Exemplar(
        source="svamp/chal-130",
        question="Mary is baking a cake. The recipe calls for 6 cups of sugar and 14 cups of flour. She "
                 "already put in 7 cups of flour and 60 cups of sugar. How many more cups of flour does "
                 "she need to add?",
        gold="7",
        text="The recipe needs 14 cups of flour and she put in 7, so she needs 14 - 7 = 7 more cups. "
             "The answer is 7.",
        code="def solution():\n"
             "    flour_needed = 14\n"
             "    flour_added = 7\n"
             "    return flour_needed - flour_added\n",
    ),
    Exemplar(
        source="svamp/chal-211",
        question="Baker made 170 cakes. He sold 78 of them and bought 31 new cakes. How many more cakes did "
                 "baker sell than those he bought?",
        gold="47",
        text="He sold 78 cakes and bought 31, so he sold 78 - 31 = 47 more than he bought. The answer is 47.",
        code="def solution():\n"
             "    sold = 78\n"
             "    bought = 31\n"
             "    return sold - bought\n",
    ),
)
