"""GSM8K exemplars, written from GSM8K training problems."""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="gsm8k/train/7054",
        question="A magician has a top hat with 20 red marbles and a top hat with 30 blue marbles. If he "
                 "takes away 3 red marbles and four times as many blue marbles as red marbles (without "
                 "looking), how many marbles in total does he have left?",
        gold="35",
        text="He takes away 4 * 3 = 12 blue marbles. He has 20 - 3 = 17 red marbles and 30 - 12 = 18 "
             "blue marbles left. In total he has 17 + 18 = 35 marbles left. The answer is 35.",
        code="def solution():\n"
             "    red_taken = 3\n"
             "    blue_taken = 4 * red_taken\n"
             "    red_left = 20 - red_taken\n"
             "    blue_left = 30 - blue_taken\n"
             "    return red_left + blue_left\n",
    ),
    Exemplar(
        source="gsm8k/train/4345",
        question="Allie has 9 toys, which are in total worth $52. If we know that one toy is worth $12, and "
                 "all the other toys have the same value, how much does one of the other toys cost?",
        gold="5",
        text="The other toys are worth 52 - 12 = 40 dollars together. There are 9 - 1 = 8 other toys, so "
             "each costs 40 / 8 = 5 dollars. The answer is 5.",
        code="def solution():\n"
             "    other_value = 52 - 12\n"
             "    other_toys = 9 - 1\n"
             "    return other_value / other_toys\n",
    ),
    Exemplar(
        source="gsm8k/train/2737",
        question="Paul lives in a 5th story apartment.  He makes 3 trips out from and back to his apartment "
                 "throughout the day each day of a week.  How many feet does he travel vertically in total "
                 "over the week if each story is 10 feet tall?",
        gold="2100",
        text="His apartment is 5 * 10 = 50 feet up. One trip out and back is 2 * 50 = 100 feet. Three trips "
             "a day make 3 * 100 = 300 feet a day. Over the 7 days of a week he travels 7 * 300 = 2100 "
             "feet. The answer is 2100.",
        code="def solution():\n"
             "    height = 5 * 10\n"
             "    per_trip = 2 * height\n"
             "    per_day = 3 * per_trip\n"
             "    return 7 * per_day\n",
    ),
    Exemplar(
        source="gsm8k/train/1665",
        question="Brendan has entered a kickboxing competition and wins matches against multiple "
                 "contestants. He wins all of the matches in the first 2 rounds, each of which had 6 "
                 "matches, then wins half of the 4 matches in the last round. How many matches did Brendan "
                 "win throughout the competition?",
        gold="14",
        text="In the first 2 rounds he wins 2 * 6 = 12 matches. In the last round he wins 4 / 2 = 2 "
             "matches. In total he wins 12 + 2 = 14 matches. The answer is 14.",
        code="def solution():\n"
             "    first_rounds = 2 * 6\n"
             "    last_round = 4 // 2\n"
             "    return first_rounds + last_round\n",
    ),
    Exemplar(
        source="gsm8k/train/625",
        question="Georgia has 25 pieces of stationery while Lorene has three times as many pieces of "
                 "stationery as Georgia. How many fewer pieces of stationery does Georgia have than Lorene?",
        gold="50",
        text="Lorene has 3 * 25 = 75 pieces. Georgia has 75 - 25 = 50 fewer pieces than Lorene. "
             "The answer is 50.",
        code="def solution():\n"
             "    georgia = 25\n"
             "    lorene = 3 * georgia\n"
             "    return lorene - georgia\n",
    ),
    Exemplar(
        source="gsm8k/train/2153",
        question="Aunt Angela has 70 jellybeans in a jar.  She wants to divide them equally and give them "
                 "to her 3 nephews and 2 nieces.  How many jellybeans did each nephew or niece receive?",
        gold="14",
        text="She gives them to 3 + 2 = 5 children. Each child receives 70 / 5 = 14 jellybeans. "
             "The answer is 14.",
        code="def solution():\n"
             "    children = 3 + 2\n"
             "    return 70 // children\n",
    ),
    Exemplar(
        source="gsm8k/train/3231",
        question="Nancy carves statues out of jade. A giraffe statue takes 120 grams of jade and sells for "
                 "$150. An elephant statue takes twice as much jade and sells for $350. If Nancy has 1920 "
                 "grams of jade, how much more money will she make turning it all into elephants instead of "
                 "giraffes?",
        gold="400",
        text="An elephant takes 2 * 120 = 240 grams of jade. The jade makes 1920 / 120 = 16 giraffes, "
             "worth 16 * 150 = 2400 dollars, or 1920 / 240 = 8 elephants, worth 8 * 350 = 2800 dollars. "
             "Elephants make 2800 - 2400 = 400 dollars more. The answer is 400.",
        code="def solution():\n"
             "    jade = 1920\n"
             "    elephant_jade = 2 * 120\n"
             "    giraffe_money = jade // 120 * 150\n"
             "    elephant_money = jade // elephant_jade * 350\n"
             "    return elephant_money - giraffe_money\n",
    ),
    Exemplar(
        source="gsm8k/train/5284",
        question="Cody goes to the store and buys $40 worth of stuff.  The taxes were 5%.  After taxes, he "
                 "got an $8 discount.  Cody and his friend split the final price equally. How much did "
                 "Cody pay?",
        gold="17",
        text="The taxes are 40 * 5 / 100 = 2 dollars, so the price is 40 + 2 = 42 dollars. After the "
             "discount it is 42 - 8 = 34 dollars. Cody pays half of it, 34 / 2 = 17 dollars. "
             "The answer is 17.",
        code="def solution():\n"
             "    taxes = 40 * 5 / 100\n"
             "    final_price = 40 + taxes - 8\n"
             "    return final_price / 2\n",
    ),
)
