"""StrategyQA exemplars (text method only), written from StrategyQA's seeded train part."""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="strategyqa/781",
        question="Are hippos dangerous to humans?",
        gold="yes",
        text="Hippos are very large, fast on land and have big teeth, and they attack people who come near "
             "them. So hippos are dangerous to humans. The answer is yes.",
    ),
    Exemplar(
        source="strategyqa/991",
        question="Could Katharine Hepburn have ridden the AirTrain JFK?",
        gold="no",
        text="Katharine Hepburn died in June 2003. The AirTrain JFK opened in December 2003, after her "
             "death. So she could not have ridden it. The answer is no.",
    ),
    Exemplar(
        source="strategyqa/2158",
        question="Is a felony jury enough people for a Bunco game?",
        gold="yes",
        text="A felony jury has 12 people. Bunco is played by 12 or more players. So a felony jury is "
             "enough people for a game of Bunco. The answer is yes.",
    ),
    Exemplar(
        source="strategyqa/642",
        question="Do mail carriers need multiple uniforms?",
        gold="yes",
        text="Mail carriers work all year in every kind of weather, so they need clothes for heat, cold "
             "and rain, and spares while others are washed. The answer is yes.",
    ),
    Exemplar(
        source="strategyqa/388",
        question="Can a woman on average have a baby before wheat seed blooms?",
        gold="no",
        text="A pregnancy lasts about 9 months. Wheat grows from seed to harvest in about 7 to 8 months, "
             "so the wheat comes first. The answer is no.",
    ),
    Exemplar(
        source="strategyqa/884",
        question="Do people with mood disorders need permanent institutionalization?",
        gold="no",
        text="Most mood disorders are treated with therapy and medicine while the person lives at home. "
             "Few people ever need a hospital stay, and almost never a permanent one. The answer is no.",
    ),
)
