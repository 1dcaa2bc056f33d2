"""llmeval/specs.py: dataset specs are checked key by key and merged by inheritance."""

import pytest

from llmeval.datasets import REGISTRY, builtin_spec_files
from llmeval.specs import (
    GENERATE_UNTIL,
    MULTIPLE_CHOICE_LL,
    SpecError,
    build_registry,
    compile_template,
)

GOOD = """
name = "tiny"
category = "math"
scorer = "exact_match"
[source]
format = "rows"
files = ["tiny/{split}.jsonl"]
[fields]
question = "q"
answer = "a"
[prompt]
template = "Q: {q}\\nA:"
"""


def spec_file(tmp_path, text, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path, text):
    path = spec_file(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        build_registry([path])
    return str(exc.value).replace(str(path), "F")


def test_a_good_spec_and_its_defaults(tmp_path):
    (spec,) = build_registry([spec_file(tmp_path, GOOD)]).values()
    assert (spec.name, spec.split, spec.output_type, spec.fewshot_split) == (
        "tiny",
        "test",
        GENERATE_UNTIL,
        None,
    )
    assert (spec.target_delimiter, spec.fewshot_delimiter, spec.fewshot_sampler) == (
        " ",
        "\n\n",
        "random",
    )
    assert spec.template.render({"q": "1+1?"}) == "Q: 1+1?\nA:"


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            ("[prompt]", "[prompt]\ntempalte = 1"),
            "F: unknown key prompt.tempalte (known in [prompt]: chat_instruction, description, fewshot_delimiter, stop, target, target_delimiter, template)",
        ),
        (
            ('scorer = "exact_match"', 'scorer = "regex"'),
            "F: key scorer: 'regex' is not one of code_exec, exact_match, multiple_choice",
        ),
        (('category = "math"', "category = 3"), "F: key category: expected str, got int 3"),
        (
            ('files = ["tiny/{split}.jsonl"]', 'files = ["tiny/{split}.jsonl", 3]'),
            "F: key source.files: expected a list of str, got int 3 in it",
        ),
        (
            ('files = ["tiny/{split}.jsonl"]', 'files = ["test.jsonl"]'),
            "F: key source.files: 'test.jsonl' is not this dataset's own name: a bare file must carry the dataset's name (e.g. tiny.jsonl), others go in a folder (tiny/test.jsonl)",
        ),
        (
            ('files = ["tiny/{split}.jsonl"]', 'files = ["{split}.jsonl"]'),
            "F: key source.files: '{split}.jsonl' is not this dataset's own name: a bare file must carry the dataset's name (e.g. tiny.jsonl), others go in a folder (tiny/test.jsonl)",
        ),
        (
            ('files = ["tiny/{split}.jsonl"]', 'files = ["../tiny.jsonl"]'),
            "F: key source.files: '../tiny.jsonl' must be a relative path inside a data directory",
        ),
        (
            ('files = ["tiny/{split}.jsonl"]', 'files = ["tiny/{name}.jsonl"]'),
            "F: key source.files: 'tiny/{name}.jsonl': only {split} may be written in braces",
        ),
        (('question = "q"', ""), "F: missing key fields.question (the rows format needs it)"),
        (
            ('template = "Q: {q}\\nA:"', 'template = "Q: {q\\nA:"'),
            "F: key prompt.template: bad placeholder '{q\\nA:' (write {field}, or {{ for a brace)",
        ),
        (
            ('template = "Q: {q}\\nA:"', 'template = "Q: }"'),
            "F: key prompt.template: single '}' at offset 3 (write }} for a brace)",
        ),
        (
            ("[prompt]", '[fewshot]\nsplit = "test"\n[prompt]'),
            "F: key fewshot.split: 'test' is the evaluated split; few-shot examples never come from it",
        ),
        (("[prompt]", '[fewshot]\nsampler = "first_n"\n[prompt]'), "F: missing key fewshot.split"),
        (
            (
                "[prompt]",
                '[scoring]\nextractions = { accuracy = "lm-eval/gsm8k/strict-match" }\n[prompt]',
            ),
            "F: key scoring.extractions.accuracy: 'accuracy' is one of eval-aggregate's own metrics; name it after the extraction",
        ),
        (
            ("[prompt]", '[scoring]\nextractions = { strict = "nope" }\n[prompt]'),
            "F: key scoring.extractions.strict: unknown extraction 'nope' (known: lm-eval/gsm8k/flexible-extract, lm-eval/gsm8k/strict-match)",
        ),
        (
            ('scorer = "exact_match"', 'scorer = "exact_match"\noutput_type = "multiple_choice"'),
            "F: key output_type: multiple_choice (log-likelihood) needs scorer = \"multiple_choice\", not 'exact_match'",
        ),
        (
            ("[prompt]", "[choices]\ncount = 4\n[prompt]"),
            "F: key choices: only a multiple_choice dataset has choices",
        ),
        (
            ("[fields]", "[fields]\nlabel_base = 2"),
            "F: key fields.label_base: 2 out of range (must be <= 1)",
        ),
        (
            ("[prompt]", "[hub]\nfields = { label_bse = 0 }\n[prompt]"),
            "F: unknown key fields.label_bse (known in [fields]: answer, answer_after, choice_fields, choices, entry_point, id, label, label_base, numeric_answer, question, subject, test)",
        ),
        (
            ("[source]", "[sources]"),
            "F: unknown key sources (known: aliases, category, choices, description, fewshot, fields, hub, inherits, loglikelihood, name, output_type, prompt, reference_harness, scorer, scoring, source)",
        ),
        (
            ('name = "tiny"', 'name = "tiny"\ninherits = "nope"'),
            "F: key inherits: no spec named 'nope' (known: tiny)",
        ),
        (
            ('name = "tiny"', 'name = "tiny"\nfewshot = "x"'),
            "F: key fewshot: expected a table [fewshot]",
        ),
    ],
)
def test_every_bad_key_names_the_file_and_the_key(tmp_path, edit, message):
    old, new = edit
    assert old in GOOD
    assert error_of(tmp_path, GOOD.replace(old, new, 1)) == message


def test_invalid_toml_and_missing_file(tmp_path):
    assert error_of(tmp_path, "name = ").startswith("F: invalid TOML (")
    with pytest.raises(SpecError, match=r"spec file .*nope.toml does not exist"):
        build_registry([tmp_path / "nope.toml"])


def test_multiple_choice_needs_one_source_of_choices(tmp_path):
    mc = GOOD.replace('scorer = "exact_match"', 'scorer = "multiple_choice"').replace(
        'answer = "a"', 'label = "a"'
    )
    assert error_of(tmp_path, mc) == (
        "F: key fields.choices: say where the choices are in exactly one way "
        "(fields.choices, fields.choice_fields or choices.texts; got none)"
    )
    both = mc.replace('label = "a"', 'label = "a"\nchoices = "c"\nchoice_fields = ["x", "y"]')
    assert "got choices, choice_fields" in error_of(tmp_path, both)
    texts = mc + '[choices]\ntexts = ["yes", "no"]\ncount = 3\n'
    assert error_of(tmp_path, texts) == "F: key choices.count: 3 but choices.texts has 2"
    ok = build_registry([spec_file(tmp_path, mc + '[choices]\ntexts = ["yes", "no"]\n')])["tiny"]
    assert ok.choice_answer == "text" and ok.choice_count == 2


def test_fixed_formats_know_their_template_fields(tmp_path):
    text = GOOD.replace('format = "rows"', 'format = "mmlu_csv"').replace(
        '[fields]\nquestion = "q"\nanswer = "a"\n', ""
    )
    text = text.replace('scorer = "exact_match"', 'scorer = "multiple_choice"')
    assert error_of(tmp_path, text) == (
        "F: key prompt.template: unknown field {q} (the mmlu_csv format gives: "
        "choice_lines, label, label_text, question, subject, subject_text)"
    )


def test_inheritance_merges_tables_and_keeps_the_source_owner(tmp_path):
    child = spec_file(
        tmp_path,
        'inherits = "tiny"\nname = "tiny_shots"\n[prompt]\ndescription = "Math.\\n\\n"\n'
        '[fewshot]\nsplit = "train"\n',
        "child.toml",
    )
    reg = build_registry([child, spec_file(tmp_path, GOOD)])
    spec = reg["tiny_shots"]
    assert spec.template.source == "Q: {q}\nA:" and spec.prompt_description.source == "Math.\n\n"
    assert spec.files == ("tiny/{split}.jsonl",) and spec.source_owner == "tiny"
    assert spec.fewshot_split == "train" and reg["tiny"].fewshot_split is None


def test_a_user_spec_shadows_a_builtin_and_can_inherit_from_it(tmp_path):
    mine = spec_file(
        tmp_path,
        'inherits = "gsm8k"\n[prompt]\ntemplate = "Problem: {question}\\nSolution:"\n',
        "gsm8k.toml",
    )
    reg = build_registry([mine, *builtin_spec_files()])
    assert reg["gsm8k"].path == mine
    assert reg["gsm8k"].template.source == "Problem: {question}\nSolution:"
    assert reg["gsm8k"].fewshot_split == "train" and reg["gsm8k"].files == REGISTRY["gsm8k"].files


def test_cycles_duplicates_and_aliases_are_errors(tmp_path):
    a = spec_file(tmp_path, 'inherits = "b"\ncategory = "x"\n', "a.toml")
    b = spec_file(tmp_path, 'inherits = "a"\n', "b.toml")
    with pytest.raises(SpecError, match=r"a.toml: key inherits: inheritance cycle \(a -> b -> a\)"):
        build_registry([a, b])
    one = spec_file(tmp_path, GOOD, "one.toml")
    two = spec_file(tmp_path, GOOD, "two.toml")
    with pytest.raises(
        SpecError, match=r"two.toml: key name: 'tiny' is also the name of .*one.toml"
    ):
        build_registry([one, two])
    aliased = spec_file(
        tmp_path, GOOD.replace('name = "tiny"', 'name = "tiny"\naliases = ["gsm8k"]')
    )
    with pytest.raises(
        SpecError, match=r"tiny.toml: key aliases: 'gsm8k' is taken by .*gsm8k.toml"
    ):
        build_registry([aliased, *builtin_spec_files()])


def test_output_type_and_loglikelihood_flag(tmp_path):
    mc = GOOD.replace(
        'scorer = "exact_match"', 'scorer = "multiple_choice"\nloglikelihood = true'
    ).replace('answer = "a"', 'label = "a"\nchoices = "c"')
    spec = build_registry([spec_file(tmp_path, mc)])["tiny"]
    assert spec.output_type == MULTIPLE_CHOICE_LL and spec.loglikelihood
    assert REGISTRY["mmlu"].loglikelihood and not REGISTRY["gsm8k"].loglikelihood


def test_templates():
    t = compile_template("{{literal}} {a}-{b_2}", "w")
    assert t.names == {"a", "b_2"}
    assert t.render({"a": ["x", "y"], "b_2": None}) == "{literal} x\ny-"
    with pytest.raises(KeyError, match="b_2"):
        t.render({"a": 1})
    with pytest.raises(SpecError, match=r"w: bad placeholder '\{a b\}'"):
        compile_template("{a b}", "w")


def test_template_compile_is_linear_on_a_long_text():
    text = "{a}" + "x{{" * 300_000 + "}}" * 300_000
    t = compile_template(text, "w")
    assert t.render({"a": "!"}) == "!" + "x{" * 300_000 + "}" * 300_000
