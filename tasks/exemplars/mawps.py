"""MAWPS exemplars, two written from the seeded train split of each subset."""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="mawps_addsub/209",
        question="Jonah added 0.3 cup of yellow raisins and 0.4 cup of black raisins to a batch of trail "
                 "mix . How many cups of raisins did Jonah add in all ?",
        gold="0.7",
        text="He added 0.3 + 0.4 = 0.7 cups of raisins. The answer is 0.7.",
        code="def solution():\n"
             "    yellow = 0.3\n"
             "    black = 0.4\n"
             "    return yellow + black\n",
    ),
    Exemplar(
        source="mawps_addsub/81",
        question="Dan has 64 violet marbles , he gave Mary 14 of the marbles . How many violet marbles does "
                 "he now have ?",
        gold="50",
        text="He had 64 marbles and gave away 14, so he has 64 - 14 = 50 left. The answer is 50.",
        code="def solution():\n"
             "    marbles = 64\n"
             "    given = 14\n"
             "    return marbles - given\n",
    ),
    Exemplar(
        source="mawps_multiarith/288",
        question="Nancy was organizing her book case making sure each of the shelves had exactly 6 books on "
                 "it. If she had 2 shelves of mystery books and 6 shelves of picture books, how many books "
                 "did she have total?",
        gold="48",
        text="She had 2 + 6 = 8 shelves with 6 books each, so 8 * 6 = 48 books. The answer is 48.",
        code="def solution():\n"
             "    shelves = 2 + 6\n"
             "    books_per_shelf = 6\n"
             "    return shelves * books_per_shelf\n",
    ),
    Exemplar(
        source="mawps_multiarith/571",
        question="Paige picked 53 flowers for her friend’s wedding. She was making bouquets with 7 flowers "
                 "in each one. If 18 of the flowers wilted before the wedding, how many bouquets could she "
                 "still make?",
        gold="5",
        text="After 18 wilted she had 53 - 18 = 35 flowers. With 7 in each bouquet she could make "
             "35 / 7 = 5 bouquets. The answer is 5.",
        code="def solution():\n"
             "    flowers = 53 - 18\n"
             "    return flowers // 7\n",
    ),
    Exemplar(
        source="mawps_singleeq/10",
        question="Benny bought 4 new baseball trading cards to add to his collection. The next day his dog "
                 "ate half of his collection. There are now only 34 cards left. How many cards did Benny "
                 "start with ?",
        gold="64",
        text="Before the dog ate half, he had 34 * 2 = 68 cards. Before buying 4 new cards, he had "
             "68 - 4 = 64 cards. The answer is 64.",
        code="def solution():\n"
             "    before_dog = 34 * 2\n"
             "    return before_dog - 4\n",
    ),
    Exemplar(
        source="mawps_singleeq/458",
        question="Adam has $5.00 to buy an airplane that costs $4.28. How much change will Adam get?",
        gold="0.72",
        text="His change is 5.00 - 4.28 = 0.72 dollars. The answer is 0.72.",
        code="def solution():\n"
             "    paid = 5.00\n"
             "    price = 4.28\n"
             "    return round(paid - price, 2)\n",
    ),
    Exemplar(
        source="mawps_singleop/29",
        question="Anna starts with 5 candies. She gets 86 more from Larry. How many candies does Anna end with?",
        gold="91",
        text="She ends with 5 + 86 = 91 candies. The answer is 91.",
        code="def solution():\n"
             "    start = 5\n"
             "    received = 86\n"
             "    return start + received\n",
    ),
    Exemplar(
        source="mawps_singleop/14",
        question="Michelle has 2 crayons. Janet has 2 crayons. If Janet gives all of her crayons to "
                 "Michelle, how many crayons will Michelle have?",
        gold="4",
        text="Michelle will have her 2 crayons and Janet's 2: 2 + 2 = 4 crayons. The answer is 4.",
        code="def solution():\n"
             "    michelle = 2\n"
             "    janet = 2\n"
             "    return michelle + janet\n",
    ),
)
