"""AQuA exemplars, written from the seeded train part of AQuA's published file.

Programs compute the value and return the letter of the nearest option.
"""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="aqua/8",
        question="A train running at a speed of 100 miles/hour, takes 10 hours to reach its destination. "
                 "After covering quarter of the distance, it starts raining and the train has to be slowed "
                 "to speed of 75 miles/hour. What is the total journey duration?",
        choices=(("A", "10"), ("B", "11.5"), ("C", "12.5"), ("D", "13.5"), ("E", "15")),
        gold="C",
        text="The distance is 100 * 10 = 1000 miles. The first quarter, 1000 / 4 = 250 miles, takes "
             "250 / 100 = 2.5 hours. The other 1000 - 250 = 750 miles at 75 miles/hour take 750 / 75 = 10 "
             "hours. The journey takes 2.5 + 10 = 12.5 hours. The answer is C.",
        code="def solution():\n"
             "    distance = 100 * 10\n"
             "    first_part = distance / 4\n"
             "    duration = first_part / 100 + (distance - first_part) / 75\n"
             "    options = {\"A\": 10, \"B\": 11.5, \"C\": 12.5, \"D\": 13.5, \"E\": 15}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - duration))\n",
    ),
    Exemplar(
        source="aqua/39",
        question="The monthly salary S of a shop assistant is the sum of a fixed salary of $500 plus 5% of "
                 "all monthly sales. What should the monthly sales be so that her monthly salary reaches "
                 "$1500?",
        choices=(("A", "$50000"), ("B", "$40000"), ("C", "$30000"), ("D", "$20000"), ("E", "None of these")),
        gold="D",
        text="The commission must be 1500 - 500 = 1000 dollars, which is 5% of the sales. So the sales are "
             "1000 / 0.05 = 20000 dollars. The answer is D.",
        code="def solution():\n"
             "    commission = 1500 - 500\n"
             "    sales = commission / 0.05\n"
             "    options = {\"A\": 50000, \"B\": 40000, \"C\": 30000, \"D\": 20000}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - sales))\n",
    ),
    Exemplar(
        source="aqua/46",
        question="If the population of a city increases by 5 % annually, what will be the population of "
                 "the city in 2 years time if its current population is 78000?",
        choices=(("A", "81900"), ("B", "85995"), ("C", "85800"), ("D", "90000"), ("E", "None of these")),
        gold="B",
        text="After one year the population is 78000 * 1.05 = 81900. After two years it is "
             "81900 * 1.05 = 85995. The answer is B.",
        code="def solution():\n"
             "    population = 78000 * 1.05 ** 2\n"
             "    options = {\"A\": 81900, \"B\": 85995, \"C\": 85800, \"D\": 90000}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - population))\n",
    ),
    Exemplar(
        source="aqua/79",
        question="The average (arithmetic mean) of the weight of 10 vehicles is 12.2 tons. The average "
                 "weight of the group of vehicles increased by 2.6 tons after a new heavy duty truck was "
                 "added to the group? What is the weight in tons of the heavy duty truck?",
        choices=(("A", "40.8"), ("B", "41.6"), ("C", "42.2"), ("D", "43.5"), ("E", "44.8")),
        gold="A",
        text="The 10 vehicles weigh 10 * 12.2 = 122 tons. The 11 vehicles average 12.2 + 2.6 = 14.8 tons, "
             "so together they weigh 11 * 14.8 = 162.8 tons. The truck weighs 162.8 - 122 = 40.8 tons. "
             "The answer is A.",
        code="def solution():\n"
             "    before = 10 * 12.2\n"
             "    after = 11 * (12.2 + 2.6)\n"
             "    truck = after - before\n"
             "    options = {\"A\": 40.8, \"B\": 41.6, \"C\": 42.2, \"D\": 43.5, \"E\": 44.8}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - truck))\n",
    ),
    Exemplar(
        source="aqua/132",
        question="[(272 - 32) (124 + 176)] / (17 x 15 - 15) = ?",
        choices=(("A", "0"), ("B", "2.25"), ("C", "300"), ("D", "400"), ("E", "None of these")),
        gold="C",
        text="272 - 32 = 240 and 124 + 176 = 300, so the top is 240 * 300 = 72000. The bottom is "
             "17 * 15 - 15 = 240. 72000 / 240 = 300. The answer is C.",
        code="def solution():\n"
             "    value = (272 - 32) * (124 + 176) / (17 * 15 - 15)\n"
             "    options = {\"A\": 0, \"B\": 2.25, \"C\": 300, \"D\": 400}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - value))\n",
    ),
    Exemplar(
        source="aqua/139",
        question="Car ‘X’ covers a distance of 320 kms in 8 hours and car ‘Y’ covers a distance of 415 kms "
                 "in 5 hrs. What is the difference in the speed of the two cars?",
        choices=(("A", "42kms/hr"), ("B", "41km/hr"), ("C", "43kms/hr"), ("D", "45kms/hr"), ("E", "None of these")),
        gold="C",
        text="Car X drives 320 / 8 = 40 km/hr and car Y drives 415 / 5 = 83 km/hr. The difference is "
             "83 - 40 = 43 km/hr. The answer is C.",
        code="def solution():\n"
             "    difference = 415 / 5 - 320 / 8\n"
             "    options = {\"A\": 42, \"B\": 41, \"C\": 43, \"D\": 45}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - difference))\n",
    ),
    Exemplar(
        source="aqua/214",
        question="How many ways A boy can reach the top of stairs which contain 10 steps, when he can take "
                 "either one or two steps every time?",
        choices=(("A", "88"), ("B", "89"), ("C", "90"), ("D", "91"), ("E", "92")),
        gold="B",
        text="The ways to climb n steps are the ways for n - 1 steps plus the ways for n - 2 steps. From 1 "
             "way for 1 step and 2 ways for 2 steps the counts go 3, 5, 8, 13, 21, 34, 55, 89, so 10 steps "
             "can be climbed in 89 ways. The answer is B.",
        code="def solution():\n"
             "    ways = [1, 2]\n"
             "    while len(ways) < 10:\n"
             "        ways.append(ways[-1] + ways[-2])\n"
             "    options = {\"A\": 88, \"B\": 89, \"C\": 90, \"D\": 91, \"E\": 92}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - ways[-1]))\n",
    ),
    Exemplar(
        source="aqua/243",
        question="If one third of 3/4 of a number is 21. Then, find the number?",
        choices=(("A", "84"), ("B", "66"), ("C", "28"), ("D", "19"), ("E", "11")),
        gold="A",
        text="One third of 3/4 is 1/4, so a quarter of the number is 21. The number is 21 * 4 = 84. "
             "The answer is A.",
        code="def solution():\n"
             "    number = 21 / (1 / 3 * 3 / 4)\n"
             "    options = {\"A\": 84, \"B\": 66, \"C\": 28, \"D\": 19, \"E\": 11}\n"
             "    return min(options, key=lambda letter: abs(options[letter] - number))\n",
    ),
)
