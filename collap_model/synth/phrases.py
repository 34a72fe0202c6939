"""Phrasebooks for captions and queries: TRAIN and TRAIN_ALT to train on, HELDOUT to evaluate.

Held-out evaluation measures whether a model understands what happens in the music rather
than the generator's wording, so HELDOUT shares no template with TRAIN and uses its own words
for styles, moods, tempo feel, loudness, section names and grooves. Instrument names are facts
and may coincide (both books can say "piano"); their alternative names differ. TRAIN names most
things several ways ("techno track", "house track", "dance track"; "pipe organ" or "church
organ"), so that what a model learns is the thing rather than one word for it.

Templates are `str.format` strings; a template may use any subset of the fields its slot gets
(see captions.py). Sentence templates avoid subject-verb agreement with instrument names
(which may be singular or plural) by using passive voice or "with ..." phrases.
"""

from __future__ import annotations

from dataclasses import dataclass

from collap_model.synth.palette import Groove
from collap_model.synth.structure import Density, SectionKind


@dataclass(frozen=True)
class Phrasebook:
    name: str
    and_: str  # the last separator of a list of three or more: " and " or ", and "
    styles: dict[str, tuple[str, ...]]  # style -> noun phrases
    moods: dict[str, tuple[str, ...]]  # "major"/"minor" -> adjectives
    paces: tuple[tuple[str, ...], ...]  # slow, moderate, quick, fast -> adjectives
    sections: dict[SectionKind, tuple[str, ...]]  # section nouns
    ordinals: tuple[str, ...]  # "second", ... for returning sections (index 0 = second)
    levels: dict[str, tuple[str, ...]]  # dynamic marking -> adjective
    level_phrase: tuple[str, ...]  # {level}
    grooves: dict[Groove, tuple[str, ...]]  # drum pattern -> noun phrase with article
    aliases: dict[str, tuple[str, ...]]  # canonical instrument name -> names used in text
    lengths: tuple[str, ...]  # {length}: "about {words}"
    # caption sentences
    overview: tuple[str, ...]  # {a_mood} {mood} {pace} {style} {key} {tempo} {meter} {length}
    opening: tuple[str, ...]  # {section} {parts} {level_phrase}
    opening_slow: tuple[str, ...]  # {tempo}: the first section is slower than the song
    head: tuple[str, ...]  # {t} {section} {texture} {level_phrase}
    head_short: tuple[str, ...]  # {t} {section} {texture}: for songs with many sections
    texture_all: tuple[str, ...]  # {parts}
    texture_enter: tuple[str, ...]  # {entering}
    texture_leave: tuple[str, ...]  # {leaving}
    texture_same: tuple[str, ...]
    drums_in: tuple[str, ...]  # {groove}
    drums_out: tuple[str, ...]
    groove_change: tuple[str, ...]  # {groove}
    tempo_up: tuple[str, ...]  # {tempo}
    tempo_down: tuple[str, ...]  # {tempo}
    accelerando: tuple[str, ...]  # {tempo} {tempo_end}
    ritardando: tuple[str, ...]  # {tempo} {tempo_end}
    key_change: tuple[str, ...]  # {key}
    meter_change: tuple[str, ...]  # {meter}
    crescendo: tuple[str, ...]  # {level0} {level1}
    decrescendo: tuple[str, ...]  # {level0} {level1}
    drop: tuple[str, ...]
    fade: tuple[str, ...]
    # optional detail sentences ({inst} is the instrument of that role)
    role_lead: tuple[str, ...]
    role_bass: tuple[str, ...]
    role_arp: tuple[str, ...]
    role_pad: tuple[str, ...]
    role_counter: tuple[str, ...]
    role_chords: tuple[str, ...]
    harmony: tuple[str, ...]  # {roman}
    density: dict[Density, tuple[str, ...]]
    groove_keep: tuple[str, ...]  # {groove}
    reprise: tuple[str, ...]  # {section}
    structure: tuple[str, ...]  # {form}
    palette: tuple[str, ...]  # {all_parts}
    ending_fade: tuple[str, ...]
    ending_chord: tuple[str, ...]  # {tonic}
    # queries: {at} is a time phrase built from `clock` or `when`
    clock: tuple[str, ...]  # {t}
    when: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # early, middle, late
    q_overall: tuple[str, ...]  # {a_mood} {mood} {pace} {style} {key} {tempo} {inst1} {inst2}
    q_opening: tuple[str, ...]  # {parts} {section} {level}
    q_entry: tuple[str, ...]  # {inst} {at}
    q_section: tuple[str, ...]  # {section} {parts} {level} {at}
    q_tempo_up: tuple[str, ...]  # {tempo} {at}
    q_tempo_down: tuple[str, ...]  # {tempo} {at}
    q_key: tuple[str, ...]  # {key} {at}
    q_meter: tuple[str, ...]  # {meter} {at}
    q_drop: tuple[str, ...]  # {at}
    q_build: tuple[str, ...]  # {at} {level0} {level1}
    q_fade: tuple[str, ...]
    q_chord_end: tuple[str, ...]  # {tonic}
    q_no_drums: tuple[str, ...]  # {style} {inst1} {inst2}
    # what a query leads with to say which song it means, before one thing that happens in it
    q_identity: tuple[str, ...]  # {a_mood} {mood} {style} {inst1} {inst2} {inst3}
    q_joint: tuple[str, ...]  # {identity} {fact}: the two halves of a query
    # timed queries for one section turning into the next, placed where the next begins
    # ({section0} {section1} {level0} {level1}); `_up` where the next is louder. A book
    # without them (TRAIN, HELDOUT) words no such query, so its sets read as before.
    q_transition: tuple[str, ...] = ()
    q_transition_up: tuple[str, ...] = ()

    def templates(self) -> set[str]:
        """Every sentence, query and word choice of the book (for the disjointness test);
        ordinals are plain counting words both books need."""
        out: set[str] = set()
        for name, value in vars(self).items():
            if name == "ordinals" or not isinstance(value, tuple):
                continue
            for item in value:
                out.update(item if isinstance(item, tuple) else (item,))
        for table in (self.density,):
            for texts in table.values():
                out.update(texts)
        return out


TRAIN = Phrasebook(
    name="train",
    and_=" and ",
    styles={
        "pop": ("pop song", "pop track", "catchy pop tune", "pop single", "mainstream pop song"),
        "rock": ("rock song", "rock track", "rock anthem", "band-driven rock song", "rock jam"),
        "electronic": (
            "electronic track",
            "dance track",
            "techno track",
            "house track",
            "electronica piece",
        ),
        "orchestral": (
            "orchestral piece",
            "orchestral track",
            "classical piece",
            "film soundtrack piece",
            "piece for orchestra",
        ),
        "jazz": ("jazz tune", "jazz piece", "jazz standard", "jazz combo track", "bebop tune"),
        "folk": ("folk song", "acoustic song", "folk tune", "traditional folk piece", "folk track"),
        "ambient": ("ambient piece", "ambient track", "chill ambient track", "drone piece"),
    },
    moods={
        "major": ("bright", "uplifting", "cheerful", "happy", "hopeful"),
        "minor": ("melancholic", "dark", "moody", "sad", "gloomy"),
    },
    paces=(
        ("slow", "leisurely"),
        ("mid-tempo", "medium-paced"),
        ("upbeat", "bouncy"),
        ("fast", "energetic", "high-energy"),
    ),
    sections={
        SectionKind.INTRO: ("intro", "introduction", "lead-in"),
        SectionKind.VERSE: ("verse", "verse part"),
        SectionKind.CHORUS: ("chorus", "refrain", "chorus part"),
        SectionKind.BRIDGE: ("bridge", "bridge part"),
        SectionKind.BREAKDOWN: ("breakdown", "pared-down part"),
        SectionKind.BUILDUP: ("build-up", "ramp-up"),
        SectionKind.OUTRO: ("outro", "ending section", "final part"),
    },
    ordinals=("second", "third", "fourth", "fifth"),
    levels={
        "pp": ("very soft", "very quiet"),
        "p": ("soft", "quiet"),
        "mp": ("moderately soft", "fairly quiet"),
        "mf": ("moderately loud", "fairly loud"),
        "f": ("loud", "strong"),
        "ff": ("very loud", "booming"),
    },
    level_phrase=("at a {level} volume", "played at a {level} level"),
    grooves={
        Groove.BACKBEAT: ("a steady backbeat", "a straight rock beat", "a standard rock drum beat"),
        Groove.FOUR_ON_THE_FLOOR: (
            "a four-on-the-floor kick pattern",
            "a pounding dance beat",
            "a disco-style bass drum pattern",
        ),
        Groove.HALF_TIME: ("a half-time groove", "a slow half-time beat"),
        Groove.SWING: ("a swinging ride cymbal pattern", "a swing beat on the ride"),
        Groove.BREAKBEAT: ("a syncopated breakbeat", "a funky syncopated beat"),
        Groove.LIGHT: ("a light rimshot groove", "a soft rim-click beat"),
        Groove.SHAKER: ("a soft shaker rhythm", "a shaker groove"),
        Groove.WALTZ: ("a waltz-time drum pattern", "a waltz beat in three"),
        Groove.TOMS: ("pounding toms", "booming tom drums"),
        Groove.SNARE_ROLL: (
            "a snare roll that gets faster and faster",
            "a rolling snare crescendo",
        ),
    },
    aliases={
        "drums": ("drums", "a drum set"),
        "piano": ("piano", "grand piano", "concert piano"),
        "electric piano": ("electric piano", "Rhodes-style electric piano"),
        "organ": ("organ", "drawbar organ"),
        "church organ": ("church organ", "pipe organ"),
        "nylon guitar": ("nylon guitar", "classical guitar"),
        "acoustic guitar": ("acoustic guitar", "steel-string guitar"),
        "jazz guitar": ("jazz guitar", "hollow-body guitar"),
        "clean electric guitar": ("clean electric guitar", "clean guitar"),
        "distorted guitar": ("distorted guitar", "heavy distortion guitar"),
        "overdriven guitar": ("overdriven guitar", "gritty overdriven guitar"),
        "strings": ("strings", "a string section", "bowed strings"),
        "slow strings": ("slow strings", "sustained strings"),
        "synth strings": ("synth strings", "synthetic strings"),
        "pizzicato strings": ("pizzicato strings", "plucked strings"),
        "electric bass": ("electric bass", "bass guitar", "fingered electric bass"),
        "picked bass": ("picked bass", "pick-played bass"),
        "saw lead": ("a saw synth lead", "a buzzy saw lead"),
        "square lead": ("a square synth lead", "a chiptune square lead"),
        "synth pad": ("a synth pad", "a pad synth"),
        "warm pad": ("a warm synth pad", "a warm pad"),
        "sweep pad": ("a sweeping synth pad", "a sweep pad"),
        "polysynth": ("a polysynth", "a poly synth"),
        "synth brass": ("synth brass", "synthesized brass"),
        "brass section": ("a brass section", "brass", "a brass band"),
        "choir": ("a choir", "choir vocals"),
        "upright bass": ("upright bass", "acoustic bass"),
        "synth bass": ("synth bass", "a bass synth"),
        "alto sax": ("alto sax", "alto saxophone"),
        "tenor sax": ("tenor sax", "tenor saxophone"),
        "pan flute": ("pan flute", "pan pipes"),
    },
    lengths=("about {words}",),
    overview=(
        "{a_mood} {pace} {style} in {key} at {tempo} BPM, lasting {length}.",
        "This is {a_mood} {style} in {key}, {pace} at {tempo} BPM and {length} long.",
        "A {pace}, {mood} {style} of {length}, set in {key} at {tempo} BPM in {meter} time.",
    ),
    opening=(
        "It opens with {parts} {level_phrase}.",
        "The {section} begins with {parts}, {level_phrase}.",
        "The piece starts with {parts} {level_phrase} in the {section}.",
    ),
    opening_slow=("This opening is slower, at {tempo} BPM.",),
    head=(
        "At {t} the {section} begins, {texture}, {level_phrase}.",
        "The {section} arrives at {t}, {texture}, {level_phrase}.",
        "At {t} comes the {section}, {texture}, {level_phrase}.",
    ),
    head_short=("At {t}, the {section}, {texture}.", "The {section} follows at {t}, {texture}."),
    texture_all=("with {parts}", "featuring {parts}"),
    texture_enter=("adding {entering}", "bringing in {entering}"),
    texture_leave=("dropping {leaving}", "leaving out {leaving}"),
    texture_same=("with the same instruments", "keeping the same instruments"),
    drums_in=("Drums come in with {groove}.", "The drums enter playing {groove}."),
    drums_out=("The drums drop out.", "The drums stop here."),
    groove_change=("The drums switch to {groove}.", "The beat changes to {groove}."),
    tempo_up=("The tempo rises to {tempo} BPM.", "The tempo picks up to {tempo} BPM."),
    tempo_down=("The tempo slows to {tempo} BPM.", "The tempo drops to {tempo} BPM."),
    accelerando=("The tempo speeds up from {tempo} to {tempo_end} BPM during this section.",),
    ritardando=("The tempo slows from {tempo} to {tempo_end} BPM toward the end.",),
    key_change=("The key changes to {key}.", "The music modulates to {key}."),
    meter_change=("The time signature changes to {meter}.",),
    crescendo=(
        "The music swells from {level0} to {level1}.",
        "A crescendo grows from {level0} to {level1}.",
    ),
    decrescendo=("The music gradually softens from {level0} to {level1}.",),
    drop=(
        "The volume suddenly drops to near silence.",
        "Everything suddenly drops away, leaving a very quiet texture.",
    ),
    fade=("The music slowly fades out.",),
    role_lead=("The melody is played by {inst}.", "The main melody is carried by {inst}."),
    role_bass=("The bass line is played by {inst}.",),
    role_arp=("Running arpeggios come from {inst}.",),
    role_pad=("Sustained chords are held by {inst}.",),
    role_counter=("A countermelody is added by {inst}.",),
    role_chords=("The chords are played by {inst}.",),
    harmony=("The chords follow a {roman} progression.",),
    density={
        Density.SPARSE: ("The texture is sparse and open.",),
        Density.MODERATE: ("The arrangement is moderately busy.",),
        Density.DENSE: ("The arrangement is dense and full.",),
    },
    groove_keep=("The drums keep {groove}.",),
    reprise=("It repeats the melody of the earlier {section}.",),
    structure=("The structure is {form}.",),
    palette=("Across the song you hear {all_parts}.",),
    ending_fade=("The song fades away at the end.",),
    ending_chord=("The song ends on a held {tonic} chord.",),
    clock=("at {t}", "around {t}"),
    when=(
        ("early on", "near the start"),
        ("in the middle", "midway through"),
        ("near the end", "late in the song"),
    ),
    q_overall=(
        "{a_mood} {style} with {inst1} and {inst2}",
        "{pace} {style} in {key} at {tempo} BPM",
        "{mood} {pace} {style} featuring {inst1}",
    ),
    q_opening=(
        "song that opens with {parts}",
        "starts {level} with {parts} in the {section}",
        "{section} played on {parts}",
    ),
    q_entry=("{inst} comes in {at}", "entrance of {inst} {at}", "{inst} joins {at}"),
    q_section=(
        "{level} {section} with {parts} {at}",
        "the {section} starts {at}",
        "{section} with {parts} begins {at}",
    ),
    q_tempo_up=("tempo speeds up to {tempo} BPM {at}", "the tempo gets faster {at}"),
    q_tempo_down=("tempo slows down to {tempo} BPM {at}", "the tempo gets slower {at}"),
    q_key=("key change to {key} {at}", "the music modulates to {key} {at}"),
    q_meter=("time signature changes to {meter} {at}",),
    q_drop=(
        "sudden drop to near silence {at}",
        "music suddenly goes very quiet {at}",
        "everything cuts out {at}",
    ),
    q_build=(
        "crescendo from {level0} to {level1} {at}",
        "build-up that gets louder {at}",
        "gets louder and louder {at}",
    ),
    q_fade=("song fades out slowly at the end", "ends with a gentle fade-out"),
    q_chord_end=("ends on a long held {tonic} chord", "song ending on a sustained final chord"),
    q_no_drums=(
        "{style} with no drums at all",
        "{style} without drums, just {inst1} and {inst2}",
        "drumless {style} with {inst1} and {inst2}",
    ),
    q_identity=(
        "{style} with {inst1}, {inst2} and {inst3}",
        "{inst1}, {inst2} and {inst3} {style}",
        "{mood} {style} with {inst1}, {inst2} and {inst3}",
        "{style} that has {inst1}, {inst2} and {inst3}",
        "{style} with {inst1} and {inst2}",
        "{mood} {style} featuring {inst1} and {inst2}",
        "{style} where {inst1} plays over {inst2}",
        "{style} using {inst1} and {inst2}",
        "{style} with {inst1} on top of {inst2}",
        "{style} mixing {inst1} and {inst2}",
        "{style} featuring {inst1}",
        "{style} with lots of {inst1}",
    ),
    q_joint=(
        "{identity}, {fact}",
        "{identity} where {fact}",
        "{identity}: {fact}",
        "{identity} and {fact}",
        "{identity}, then {fact}",
    ),
)


# A second training book: other templates and other words for the same facts, so that the
# locator and the text side learn what a sentence says rather than one way of saying it. It
# adds no word of HELDOUT's descriptive vocabulary that TRAIN does not already use (a test
# holds this), so the held-out book stays unseen.
TRAIN_ALT = Phrasebook(
    name="train-alt",
    and_=" and ",
    styles={
        "pop": ("pop tune", "pop record", "chart pop song"),
        "rock": ("rock tune", "rock record", "hard-hitting rock song"),
        "electronic": ("electronic dance tune", "synth-based dance track", "electro track"),
        "orchestral": ("orchestral work", "piece for full orchestra", "concert piece"),
        "jazz": ("jazz track", "jazz quartet tune", "swing-era jazz tune"),
        "folk": ("folk piece", "unplugged folk song", "rustic folk tune"),
        "ambient": ("ambient work", "ambient drone track", "spacey ambient piece"),
    },
    moods={
        "major": ("cheery", "glad", "carefree", "warm-hearted"),
        "minor": ("mournful", "bleak", "sorrowful", "downcast"),
    },
    paces=(
        ("slow-moving", "languid"),
        ("moderately paced", "walking-pace"),
        ("peppy", "sprightly"),
        ("rapid", "up-tempo", "frantic"),
    ),
    sections={
        SectionKind.INTRO: ("intro section", "beginning", "instrumental intro"),
        SectionKind.VERSE: ("verse segment", "A section"),
        SectionKind.CHORUS: ("chorus segment", "big chorus", "sing-along chorus"),
        SectionKind.BRIDGE: ("bridge segment", "C section"),
        SectionKind.BREAKDOWN: ("breakdown segment", "thinned-out part", "lull"),
        SectionKind.BUILDUP: ("build-up section", "lift", "swell"),
        SectionKind.OUTRO: ("outro segment", "ending", "finale"),
    },
    ordinals=("second", "third", "fourth", "fifth"),
    levels={
        "pp": ("barely audible", "extremely soft"),
        "p": ("subdued", "low"),
        "mp": ("somewhat soft", "mellow"),
        "mf": ("somewhat loud", "full-voiced"),
        "f": ("powerful", "full-bodied"),
        "ff": ("extremely loud", "deafening"),
    },
    level_phrase=("{level} in volume", "sounding {level}"),
    grooves={
        Groove.BACKBEAT: ("a straight backbeat on two and four", "a plain rock groove"),
        Groove.FOUR_ON_THE_FLOOR: ("a steady dance kick", "a kick drum on all four beats"),
        Groove.HALF_TIME: ("a heavy half-time beat", "a half-speed drum groove"),
        Groove.SWING: ("a swing rhythm on the ride", "a ride-cymbal swing groove"),
        Groove.BREAKBEAT: ("a funky breakbeat", "an off-beat breakbeat"),
        Groove.LIGHT: ("a soft rim-click groove", "a light cross-stick beat"),
        Groove.SHAKER: ("a shaker pattern", "a light shaker beat"),
        Groove.WALTZ: ("a three-four waltz beat", "a waltz rhythm on the drums"),
        Groove.TOMS: ("rumbling toms", "heavy beats on the toms"),
        Groove.SNARE_ROLL: ("a speeding snare roll", "a snare roll rising in speed"),
    },
    aliases={
        "drums": ("drums", "a drummer"),
        "piano": ("piano", "a piano"),
        "electric piano": ("electric piano", "e-piano"),
        "organ": ("organ", "Hammond organ"),
        "church organ": ("church organ", "cathedral organ"),
        "nylon guitar": ("nylon guitar", "nylon-string guitar"),
        "acoustic guitar": ("acoustic guitar", "strummed acoustic guitar"),
        "jazz guitar": ("jazz guitar", "archtop guitar"),
        "clean electric guitar": ("clean electric guitar", "clean-toned guitar"),
        "distorted guitar": ("distorted guitar", "distortion guitar"),
        "overdriven guitar": ("overdriven guitar", "driven guitar"),
        "strings": ("strings", "violins and cellos"),
        "slow strings": ("slow strings", "long string notes"),
        "synth strings": ("synth strings", "string synth"),
        "pizzicato strings": ("pizzicato strings", "pizzicato"),
        "electric bass": ("electric bass", "electric bass line"),
        "picked bass": ("picked bass", "plectrum bass"),
        "saw lead": ("a saw lead", "a sawtooth lead synth"),
        "square lead": ("a square lead", "a square-wave lead"),
        "synth pad": ("a synth pad", "a pad"),
        "warm pad": ("a warm pad", "a soft warm pad"),
        "sweep pad": ("a sweep pad", "a filtered sweep pad"),
        "polysynth": ("a polysynth", "layered synths"),
        "synth brass": ("synth brass", "brassy synths"),
        "brass section": ("a brass section", "trumpets and trombones"),
        "choir": ("a choir", "sung choir parts"),
        "upright bass": ("upright bass", "bowed upright bass"),
        "synth bass": ("synth bass", "a synthesizer bassline"),
        "alto sax": ("alto sax", "an alto saxophone"),
        "tenor sax": ("tenor sax", "a tenor saxophone"),
        "pan flute": ("pan flute", "a pan flute"),
    },
    lengths=("around {words}", "nearly {words}"),
    overview=(
        "Overall, {a_mood} {style} in {key}, {tempo} BPM, {length} in length.",
        "The song is {a_mood}, {pace} {style} at {tempo} BPM in {key}.",
        "{a_mood} {style} in {meter}, played {pace} at {tempo} BPM, in {key}, {length} long.",
    ),
    opening=(
        "The song begins with {parts}, {level_phrase}.",
        "The {section} is played by {parts}, {level_phrase}.",
        "To begin, {parts} can be heard in the {section}, {level_phrase}.",
    ),
    opening_slow=("The beginning is slower, {tempo} BPM.",),
    head=(
        "The {section} starts at {t}, {texture}, {level_phrase}.",
        "From {t} the {section} plays, {texture}, {level_phrase}.",
        "At {t} there is the {section}, {texture}, {level_phrase}.",
    ),
    head_short=("{t} brings the {section}, {texture}.", "At {t}: the {section}, {texture}."),
    texture_all=("played by {parts}", "on {parts}"),
    texture_enter=("now with {entering}", "now joined by {entering}"),
    texture_leave=("without {leaving}", "with {leaving} gone"),
    texture_same=("with no change of instruments", "on the same instruments as before"),
    drums_in=("The drums start, playing {groove}.", "A beat starts: {groove}."),
    drums_out=("The drums fall silent.", "The beat stops."),
    groove_change=("The drumming changes to {groove}.", "The drum pattern turns into {groove}."),
    tempo_up=("The song speeds up to {tempo} BPM.", "It gets quicker, now {tempo} BPM."),
    tempo_down=("The song slows down to {tempo} BPM.", "It gets slower, now {tempo} BPM."),
    accelerando=("This section accelerates from {tempo} BPM to {tempo_end} BPM.",),
    ritardando=("This section slows down from {tempo} BPM to {tempo_end} BPM.",),
    key_change=("The song changes key to {key}.", "A modulation takes it into {key}."),
    meter_change=("The music switches to {meter} time.",),
    crescendo=(
        "The sound gets louder, from {level0} to {level1}.",
        "The dynamics rise from {level0} to {level1}.",
    ),
    decrescendo=("The sound gets softer, from {level0} to {level1}.",),
    drop=(
        "All of a sudden it goes nearly silent.",
        "Suddenly the band stops and only a faint sound is left.",
    ),
    fade=("The sound fades out little by little.",),
    role_lead=("The lead line is on {inst}.", "The tune is carried on {inst}."),
    role_bass=("The low end is held down by {inst}.",),
    role_arp=("Arpeggiated figures are played on {inst}.",),
    role_pad=("Long held chords are played on {inst}.",),
    role_counter=("A second melody is played on {inst}.",),
    role_chords=("The harmony is played on {inst}.",),
    harmony=("The chord progression is {roman}.",),
    density={
        Density.SPARSE: ("There are only a few notes at a time.",),
        Density.MODERATE: ("The arrangement has a medium amount going on.",),
        Density.DENSE: ("There is a lot going on at once.",),
    },
    groove_keep=("The drums stay on {groove}.",),
    reprise=("The melody from the earlier {section} comes back.",),
    structure=("The form is {form}.",),
    palette=("The instruments are {all_parts}.",),
    ending_fade=("At the end the song fades to silence.",),
    ending_chord=("The last sound is a held {tonic} chord.",),
    clock=("at the {t} mark", "starting {t}"),
    when=(
        ("at the start", "in the first part of the song"),
        ("partway through", "in the middle of the song"),
        ("at the end", "in the last part of the song"),
    ),
    q_overall=(
        "{a_mood} {style} using {inst1} and {inst2}",
        "{pace} {style} at {tempo} BPM in {key}",
        "{mood}, {pace} {style} with {inst1}",
    ),
    q_opening=(
        "begins with {parts}",
        "the {section} on {parts}, {level}",
        "song starting with {parts}",
    ),
    q_entry=("{inst} starts playing {at}", "{inst} enters {at}", "{at} {inst} comes in"),
    q_section=(
        "the {section} {at}",
        "{level} {section} on {parts} {at}",
        "{section} played by {parts} {at}",
    ),
    q_tempo_up=("speeds up to {tempo} BPM {at}", "it gets quicker {at}"),
    q_tempo_down=("slows to {tempo} BPM {at}", "it gets slower {at}"),
    q_key=("changes key to {key} {at}", "modulation into {key} {at}"),
    q_meter=("switch to {meter} time {at}",),
    q_drop=(
        "goes nearly silent {at}",
        "the music cuts out {at}",
        "sudden silence {at}",
    ),
    q_build=(
        "gets louder from {level0} to {level1} {at}",
        "rising dynamics {at}",
        "a big build-up {at}",
    ),
    q_fade=("fades out little by little at the end", "song that fades to silence"),
    q_chord_end=("last sound is a held {tonic} chord", "finishes on one long chord"),
    q_no_drums=(
        "{style} without any drums",
        "{style} with only {inst1} and {inst2}, no drums",
        "{style} with no beat, {inst1} and {inst2}",
    ),
    q_identity=(
        "{style} using {inst1}, {inst2} and {inst3}",
        "{mood} {style} using {inst1} and {inst2}",
        "{style} played on {inst1} and {inst2}",
        "{style} with {inst1} over {inst2}",
        "{style} built on {inst1}",
        "{style} full of {inst1}",
        "{inst1} and {inst2} in a {style}",
        "{style} of {inst1}, {inst2} and {inst3}",
    ),
    q_joint=(
        "{identity}, and then {fact}",
        "{identity} with {fact}",
        "{identity}. {fact}",
        "{identity} - then {fact}",
    ),
    q_transition=(
        "the {section0} leads into the {section1}",
        "from the {section0} into the {section1}",
        "{section0} giving way to the {section1}",
        "where the {section0} turns into the {section1}",
    ),
    q_transition_up=(
        "{level0} {section0} that builds into a {level1} {section1}",
        "{section0} growing into the {section1}",
        "the {section0} rises to a {level1} {section1}",
        "{level0} {section0}, then a {level1} {section1}",
    ),
)


HELDOUT = Phrasebook(
    name="heldout",
    and_=", and ",
    styles={
        "pop": ("pop number", "radio-friendly tune"),
        "rock": ("guitar-driven rock cut", "rock number"),
        "electronic": ("club cut", "EDM production"),
        "orchestral": ("cinematic score cue", "symphonic cue"),
        "jazz": ("small-combo jazz number", "jazz cut"),
        "folk": ("acoustic folk number", "folk ballad"),
        "ambient": ("atmospheric soundscape", "ambient soundscape"),
    },
    moods={
        "major": ("sunny", "joyful", "optimistic"),
        "minor": ("somber", "brooding", "wistful"),
    },
    paces=(("unhurried",), ("steady-paced",), ("lively",), ("brisk", "driving")),
    sections={
        SectionKind.INTRO: ("opening passage", "prelude"),
        SectionKind.VERSE: ("verse section", "stanza"),
        SectionKind.CHORUS: ("hook section", "main hook"),
        SectionKind.BRIDGE: ("middle eight", "contrasting passage"),
        SectionKind.BREAKDOWN: ("stripped-back break", "quiet interlude"),
        SectionKind.BUILDUP: ("riser", "tension-building passage"),
        SectionKind.OUTRO: ("coda", "closing passage"),
    },
    ordinals=("second", "third", "fourth", "fifth"),
    levels={
        "pp": ("whisper-quiet",),
        "p": ("hushed",),
        "mp": ("restrained",),
        "mf": ("medium-volume",),
        "f": ("forceful",),
        "ff": ("thunderous",),
    },
    level_phrase=("with a {level} dynamic", "kept {level}"),
    grooves={
        Groove.BACKBEAT: ("a solid two-and-four groove", "a classic kick-snare pattern"),
        Groove.FOUR_ON_THE_FLOOR: ("a thumping kick on every beat", "a club-style steady kick"),
        Groove.HALF_TIME: ("a laid-back halved feel",),
        Groove.SWING: ("a jazzy swung ride rhythm",),
        Groove.BREAKBEAT: ("a choppy broken-beat rhythm",),
        Groove.LIGHT: ("a gentle side-stick pattern",),
        Groove.SHAKER: ("a quiet maraca pulse",),
        Groove.WALTZ: ("a lilting three-beat drum pattern",),
        Groove.TOMS: ("tribal tom-tom rhythms",),
        Groove.SNARE_ROLL: ("an accelerating snare build",),
    },
    aliases={
        "drums": ("a drum kit", "percussion"),
        "piano": ("acoustic piano",),
        "strings": ("a string ensemble", "orchestral strings"),
        "electric bass": ("electric bass guitar",),
        "distorted guitar": ("fuzzy electric guitar", "distorted electric guitar"),
        "overdriven guitar": ("crunchy electric guitar",),
        "saw lead": ("a sawtooth synthesizer lead",),
        "square lead": ("a square-wave synthesizer lead",),
        "synth pad": ("a synthesizer pad",),
        "warm pad": ("a mellow synthesizer pad",),
        "sweep pad": ("a swelling synthesizer pad",),
        "polysynth": ("a polyphonic synthesizer",),
        "brass section": ("a horn section",),
        "choir": ("choral voices", "a vocal ensemble"),
        "upright bass": ("double bass",),
        "synth bass": ("a synthesizer bass",),
    },
    lengths=("roughly {words}",),
    overview=(
        "Here is {a_mood} {style} in {key}, moving at {tempo} beats per minute; it runs {length}.",
        "{a_mood} {style}: {key}, {tempo} beats per minute, {pace} in feel, {length} in total.",
        "What follows is {a_mood}, {pace} {style}, {length} long, pitched in {key}"
        " with {meter} meter.",
    ),
    opening=(
        "Things get going with {parts}, {level_phrase}.",
        "First comes the {section}: {parts}, {level_phrase}.",
        "We hear {parts} first, {level_phrase}, during the {section}.",
    ),
    opening_slow=("At first the pace is held back to {tempo} beats per minute.",),
    head=(
        "By {t} we reach the {section}, {texture}, {level_phrase}.",
        "{t} marks the start of the {section}, {texture}, {level_phrase}.",
        "The {section} kicks off at {t}, {texture}, {level_phrase}.",
    ),
    head_short=("{t}: the {section}, {texture}.", "Next, from {t}, the {section}, {texture}."),
    texture_all=("scored for {parts}", "built on {parts}"),
    texture_enter=("layering in {entering}", "welcoming {entering}"),
    texture_leave=("minus {leaving}", "stripping away {leaving}"),
    texture_same=("on unchanged instrumentation", "the lineup untouched"),
    drums_in=("Percussion joins with {groove}.", "A drum part appears, laying down {groove}."),
    drums_out=("The percussion falls away.", "No percussion remains from here."),
    groove_change=("The kit moves to {groove}.", "The rhythm pattern becomes {groove}."),
    tempo_up=(
        "The pace quickens to {tempo} beats per minute.",
        "Things move along faster, at {tempo} beats per minute.",
    ),
    tempo_down=(
        "The pace eases back to {tempo} beats per minute.",
        "It settles into a slower {tempo} beats per minute.",
    ),
    accelerando=(
        "Over this passage the pulse accelerates from {tempo} to {tempo_end} beats per minute.",
    ),
    ritardando=("Gradually the pulse relaxes from {tempo} to {tempo_end} beats per minute.",),
    key_change=("The tonal center shifts to {key}.", "Harmonically it moves into {key}."),
    meter_change=("The meter becomes {meter}.",),
    crescendo=(
        "Volume climbs steadily from {level0} to {level1}.",
        "Intensity mounts, going from {level0} to {level1}.",
    ),
    decrescendo=("Volume ebbs away, from {level0} to {level1}.",),
    drop=(
        "Abruptly the energy collapses into near silence.",
        "In an instant the sound thins to almost nothing.",
    ),
    fade=("Sound dissolves gradually toward silence.",),
    role_lead=("Melodic duties fall to {inst}.", "The tune itself belongs to {inst}."),
    role_bass=("Underneath, {inst} anchors the low end.",),
    role_arp=("Rippling broken-chord figures are traced by {inst}.",),
    role_pad=("A cushion of long chords comes from {inst}.",),
    role_counter=("Supporting lines are supplied by {inst}.",),
    role_chords=("Harmonic backing comes from {inst}.",),
    harmony=("Harmonically it cycles through {roman}.",),
    density={
        Density.SPARSE: ("Little is going on; the sound is airy.",),
        Density.MODERATE: ("The activity level sits in the middle.",),
        Density.DENSE: ("The sound is packed and busy.",),
    },
    groove_keep=("Rhythmically, the kit holds {groove}.",),
    reprise=("Its tune echoes the previous {section}.",),
    structure=("Formally the track runs {form}.",),
    palette=("The full palette includes {all_parts}.",),
    ending_fade=("The track evaporates into silence at the close.",),
    ending_chord=("A final sustained {tonic} chord closes the track.",),
    clock=("at roughly {t}", "close to {t}"),
    when=(
        ("in the opening moments", "shortly after it begins"),
        ("around the halfway point", "in the central stretch"),
        ("in the closing stretch", "toward the finish"),
    ),
    q_overall=(
        "{a_mood} {style} built around {inst1} plus {inst2}",
        "{style} in {key}, {tempo} beats per minute, {pace}",
        "{pace}, {mood} {style} led by {inst1}",
    ),
    q_opening=(
        "track beginning with just {parts}",
        "{level} {section} on {parts}",
        "the first sounds heard are {parts}",
    ),
    q_entry=("{inst} appears {at}", "{at}, {inst} added to the arrangement"),
    q_section=(
        "{level} {section} arriving {at}",
        "{section} built on {parts} starting {at}",
        "reaching the {section} {at}",
    ),
    q_tempo_up=("pace quickens to {tempo} beats per minute {at}", "things accelerate {at}"),
    q_tempo_down=("pace eases to {tempo} beats per minute {at}", "things decelerate {at}"),
    q_key=("tonal center shifts to {key} {at}", "{at}, a shift into {key}"),
    q_meter=("meter becomes {meter} {at}",),
    q_drop=("energy collapses into near silence {at}", "abrupt quiet passage {at}"),
    q_build=("volume climbs from {level0} to {level1} {at}", "tension mounts steadily {at}"),
    q_fade=(
        "track evaporates into silence at the close",
        "closing with a slow dissolve to nothing",
    ),
    q_chord_end=("final sustained {tonic} chord closes it", "last moment is one lingering chord"),
    q_no_drums=(
        "{style} entirely free of percussion",
        "percussion-free {style} of {inst1} plus {inst2}",
    ),
    q_identity=(
        "{style} combining {inst1}, {inst2} plus {inst3}",
        "{style} built around {inst1} plus {inst2}",
        "{mood} {style} led by {inst1} over {inst2}",
        "{style} centred on {inst1} alongside {inst2}",
        "{style} heavy on {inst1}",
    ),
    q_joint=("{identity} - {fact}", "{identity}; {fact}", "{identity} in which {fact}"),
)

PHRASEBOOKS: dict[str, Phrasebook] = {book.name: book for book in (TRAIN, TRAIN_ALT, HELDOUT)}
