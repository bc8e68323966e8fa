"""llama.cpp's log as publisher captures it: levels, continuation lines, and the reason a load failed."""

from __future__ import annotations

from publisher.runtimes.llama_cpp import (
    GGML_LOG_LEVEL_CONT,
    GGML_LOG_LEVEL_ERROR,
    GGML_LOG_LEVEL_WARN,
    LlamaLog,
)

INFO = 2


def test_continuation_lines_keep_the_level_of_the_message_they_continue() -> None:
    log = LlamaLog()
    log.feed(INFO, "llama_model_loader: loaded meta data\n")
    log.feed(GGML_LOG_LEVEL_ERROR, "llama_model_load: error loading model: ")
    log.feed(GGML_LOG_LEVEL_CONT, "tensor 'blk.0.attn_q.weight' data is not within the file bounds\n")
    log.feed(GGML_LOG_LEVEL_CONT, "second line\n")
    log.feed(INFO, "llama_model_load_from_file_impl: failed")
    log.close()
    assert log.lines == [
        (INFO, "llama_model_loader: loaded meta data"),
        (
            GGML_LOG_LEVEL_ERROR,
            "llama_model_load: error loading model: tensor 'blk.0.attn_q.weight' data is not within the file bounds",
        ),
        (GGML_LOG_LEVEL_ERROR, "second line"),
        (INFO, "llama_model_load_from_file_impl: failed"),
    ]


def test_the_loader_error_is_the_reason_without_its_prefixes() -> None:
    log = LlamaLog()
    log.feed(GGML_LOG_LEVEL_WARN, "llama_model_loader: a warning\n")
    log.feed(
        GGML_LOG_LEVEL_ERROR,
        "llama_model_load: error loading model: error loading model vocabulary: unknown pre-tokenizer type: 'x'\n",
    )
    log.feed(GGML_LOG_LEVEL_ERROR, "llama_model_load_from_file_impl: failed to load model\n")
    assert log.last_error() == "error loading model vocabulary: unknown pre-tokenizer type: 'x'"


def test_without_a_telling_loader_line_the_first_error_or_warning_is_the_cause_and_info_never_is() -> None:
    log = LlamaLog()
    log.feed(INFO, "print_info: error-looking info line\n")
    assert log.last_error() is None
    log.feed(GGML_LOG_LEVEL_WARN, "gguf_init_from_file_impl: invalid magic characters: 'XXXX'\n")
    log.feed(GGML_LOG_LEVEL_ERROR, "gguf_init_from_file_impl: failed to read header\n")
    log.feed(GGML_LOG_LEVEL_ERROR, "llama_model_load: error loading model: llama_model_loader: failed to load model\n")
    assert log.last_error() == "invalid magic characters: 'XXXX'"


def test_each_line_reaches_the_listener_as_it_completes() -> None:
    seen: list[str] = []
    log = LlamaLog(on_line=seen.append)
    log.feed(INFO, "[   1/  30] tok")
    assert seen == []
    log.feed(GGML_LOG_LEVEL_CONT, "en_embd.weight\n[   2/  30] ")
    assert seen == ["[   1/  30] token_embd.weight"]
