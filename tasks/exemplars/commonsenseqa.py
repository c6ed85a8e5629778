"""CommonsenseQA exemplars (text method only), written from CommonsenseQA's published train split."""

from tasks.exemplars import Exemplar

EXEMPLARS = (
    Exemplar(
        source="commonsenseqa/ba08da656f14a4ccfa9a0ca2278168c5",
        question="In order to wrestle better you lift weights to?",
        choices=(("A", "have strength"), ("B", "strong"), ("C", "take lessons"), ("D", "fo brushing"),
                 ("E", "get naked")),
        gold="A",
        text="Lifting weights builds muscle, and a wrestler with more muscle has more strength. The choice "
             "that completes the sentence is have strength. The answer is A.",
    ),
    Exemplar(
        source="commonsenseqa/8ee248d88662d43c8be285c8b6f37e8b",
        question="I was having a bath for 4 hours, what might I suffer from physiologically?",
        choices=(("A", "have fun"), ("B", "cold"), ("C", "get wet"), ("D", "being clean"),
                 ("E", "wrinkled skin")),
        gold="E",
        text="Skin that stays in water for hours swells and wrinkles. Of the choices, only wrinkled skin "
             "is something the body suffers. The answer is E.",
    ),
    Exemplar(
        source="commonsenseqa/edfc5fcab78823708d0b93de0196f11c",
        question="Billy loved having food, but he didn't like the consequences of overeating.   What is the "
                 "long-term consequence of having too much food?",
        choices=(("A", "digesting"), ("B", "constipation"), ("C", "weight gain"), ("D", "not hungry"),
                 ("E", "gas")),
        gold="C",
        text="A body given more food than it needs stores the rest as fat, month after month. The "
             "long-term consequence is weight gain. The answer is C.",
    ),
    Exemplar(
        source="commonsenseqa/f729dbea5c5c02c03a619e65911e5857",
        question="Washing clothes over and over many times what do they do?",
        choices=(("A", "transmutate"), ("B", "wear out"), ("C", "torn"), ("D", "get wet"),
                 ("E", "wet clothes")),
        gold="B",
        text="Every wash rubs and stretches the fibres of clothes a little. After many washes the clothes "
             "wear out. The answer is B.",
    ),
    Exemplar(
        source="commonsenseqa/c98ab3770446918f21f70573a168c540",
        question="The hermit had a bedroom and kitchen in his what on the hill?",
        choices=(("A", "dwelling"), ("B", "apartment"), ("C", "at hotel"), ("D", "condo"), ("E", "loft")),
        gold="A",
        text="A hermit lives alone, away from towns, so not in an apartment, hotel, condo or loft. The "
             "place he lives in on the hill is his dwelling. The answer is A.",
    ),
    Exemplar(
        source="commonsenseqa/4821f0cdca3eb0324f3d3456b38fe9bb",
        question="Where does one wait on a bench for something on tracks?",
        choices=(("A", "train station"), ("B", "state park"), ("C", "crosswalk"), ("D", "bus stop"),
                 ("E", "bus depot")),
        gold="A",
        text="Trains run on tracks, and people wait on benches for them at a train station. "
             "The answer is A.",
    ),
)
