"""ASDiv exemplars, written from problems of ASDiv's seeded train split."""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="asdiv/282",
        question="Feeling sad about their loss on their first game, Chuck and his teammates were determined "
                 "to win on their next match against the Yellow Team. They scored 72 points and the Yellow "
                 "Team scored 55, how large was their lead?",
        gold="17",
        text="Their lead is the difference of the scores: 72 - 55 = 17 points. The answer is 17.",
        code="def solution():\n"
             "    their_score = 72\n"
             "    yellow_score = 55\n"
             "    return their_score - yellow_score\n",
    ),
    Exemplar(
        source="asdiv/249",
        question="When the building is done, they wanted to make it shine brightly in the night. To fix "
                 "that, they commissioned 432 fireflies and 297 glow worms. How many animals worked in the "
                 "lights?",
        gold="729",
        text="There were 432 fireflies and 297 glow worms, so 432 + 297 = 729 animals. The answer is 729.",
        code="def solution():\n"
             "    fireflies = 432\n"
             "    glow_worms = 297\n"
             "    return fireflies + glow_worms\n",
    ),
    Exemplar(
        source="asdiv/1240",
        question="Last week Fred had 46 dollars and Jason had 13 dollars. Fred washed cars over the weekend "
                 "and now has 57 dollars. How much money did Fred make washing cars ?",
        gold="11",
        text="Fred went from 46 to 57 dollars, so he made 57 - 46 = 11 dollars. The answer is 11.",
        code="def solution():\n"
             "    before = 46\n"
             "    after = 57\n"
             "    return after - before\n",
    ),
    Exemplar(
        source="asdiv/342",
        question="Katie spent a total $350.00 on her whole stay in the island. If she spent $125.00 on food "
                 "and $135.00 on hotel rooms, how much did she spend on buying other stuff?",
        gold="90",
        text="Food and hotel cost 125 + 135 = 260 dollars. The rest is 350 - 260 = 90 dollars. "
             "The answer is 90.",
        code="def solution():\n"
             "    total = 350.00\n"
             "    food_and_hotel = 125.00 + 135.00\n"
             "    return total - food_and_hotel\n",
    ),
    Exemplar(
        source="asdiv/1436",
        question="An architect was building a hotel downtown. He bought 147 lamps to put in the rooms. If "
                 "each room gets 7 lamps, how many rooms does the hotel have?",
        gold="21",
        text="With 7 lamps in each room, 147 lamps fill 147 / 7 = 21 rooms. The answer is 21.",
        code="def solution():\n"
             "    lamps = 147\n"
             "    lamps_per_room = 7\n"
             "    return lamps // lamps_per_room\n",
    ),
    Exemplar(
        source="asdiv/1049",
        question="Noah made 12 kg of trail mix for his family's hiking trip. His family ate 8600 g of the "
                 "trail mix on the hiking trip. How many grams of trail mix did Noah have left?",
        gold="3400",
        text="12 kg is 12 * 1000 = 12000 grams. After they ate 8600 grams, 12000 - 8600 = 3400 grams were "
             "left. The answer is 3400.",
        code="def solution():\n"
             "    made_grams = 12 * 1000\n"
             "    eaten_grams = 8600\n"
             "    return made_grams - eaten_grams\n",
    ),
    Exemplar(
        source="asdiv/435",
        question="HappyLand has twice the land area of Super Fun-tastic Land. If Super Fun-tastic Land has a "
                 "land area of 4897 square feet, what would be the total land area of HappyLand?",
        gold="9794",
        text="HappyLand is twice as large: 2 * 4897 = 9794 square feet. The answer is 9794.",
        code="def solution():\n"
             "    fun_tastic = 4897\n"
             "    return 2 * fun_tastic\n",
    ),
    Exemplar(
        source="asdiv/980",
        question="The Wholesome Bakery baked 5 loaves of bread on Wednesday, 7 loaves of bread on Thursday, "
                 "10 loaves of bread on Friday, 14 loaves of bread on Saturday, and 19 loaves of bread on "
                 "Sunday. If this pattern continues, how many loaves of bread will they bake on Monday?",
        gold="25",
        text="The daily increases are 2, 3, 4 and 5, so the next increase is 6. On Monday they bake "
             "19 + 6 = 25 loaves. The answer is 25.",
        code="def solution():\n"
             "    loaves = [5, 7, 10, 14, 19]\n"
             "    next_increase = loaves[-1] - loaves[-2] + 1\n"
             "    return loaves[-1] + next_increase\n",
    ),
)
