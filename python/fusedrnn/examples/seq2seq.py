"""Encoder-decoder (seq2seq) with different input and output lengths.

Source: 4-9 digits (1-8) padded with 0 to 9 steps.  Target: the source's last three real
digits in reverse order (3 steps), so the answer depends on where each source ends - the
encoder's mask makes its final states those after the last real digit.

Training (teacher forcing): the encoder LSTM (``return_state=True``) reads the source; its
final (h, c) are the ``initial_state`` of the decoder LSTM, which reads START followed by
the target shifted right and predicts the target.  Inference (greedy decoding): an encoder
model gives the states, then a one-step decoder model - the same layers, called again on
new inputs - is fed START and then its own previous prediction, carrying its states.

    python -m fusedrnn.examples.seq2seq [--full]
"""
from __future__ import annotations

import numpy as np

from fusedrnn import engine, layers, models, optimizers
from fusedrnn.examples._common import padded_tokens, run_from_command_line, split

SOURCE_LENGTH = 9
TARGET_LENGTH = 3
DIGITS = 9            # ids 1-8 are digits, 0 is padding
START = DIGITS        # decoder-input id of the start token
TARGET_VOCAB = DIGITS + 1


def make_data(rng, n):
    """(source ids (n, 9), decoder inputs (n, 3), targets (n, 3))."""
    source, lengths = padded_tokens(rng, n, SOURCE_LENGTH, 1, DIGITS, min_length=4)
    rows = np.arange(n)[:, None]
    last_three = lengths[:, None] - 1 - np.arange(TARGET_LENGTH)   # reversed positions
    target = source[rows, last_three].astype(np.int64)
    decoder_input = np.concatenate([np.full((n, 1), START), target[:, :-1]], axis=1)
    return source, decoder_input.astype(np.int32), target


class Seq2Seq:
    """The training model plus the encoder and one-step decoder used for greedy decoding;
    all three share the same layers (and so the same weights)."""

    def __init__(self, units=48, embedding=12):
        self.source_embedding = layers.Embedding(DIGITS, embedding, mask_zero=True)
        self.encoder = layers.LSTM(units, return_state=True)
        self.target_embedding = layers.Embedding(TARGET_VOCAB, embedding)
        self.decoder = layers.LSTM(units, return_sequences=True, return_state=True)
        self.classifier = layers.Dense(TARGET_VOCAB, activation="softmax")

        source = engine.Input((SOURCE_LENGTH,), dtype="int32", name="source")
        decoder_input = engine.Input((None,), dtype="int32", name="decoder_input")
        _, h, c = self.encoder(self.source_embedding(source))
        sequence, _, _ = self.decoder(self.target_embedding(decoder_input), initial_state=[h, c])
        self.training_model = models.Model([source, decoder_input], self.classifier(sequence),
                                           name="seq2seq")
        self.encoder_model = models.Model(source, [h, c], name="encoder")

        token = engine.Input((1,), dtype="int32", name="token")
        h_in = engine.Input((units,), name="h")
        c_in = engine.Input((units,), name="c")
        step, h_out, c_out = self.decoder(self.target_embedding(token), initial_state=[h_in, c_in])
        self.step_model = models.Model([token, h_in, c_in], [self.classifier(step), h_out, c_out],
                                       name="decoder_step")

    def greedy_decode(self, source, length=TARGET_LENGTH):
        """Predicted target ids (n, length): feed START, then each prediction back in."""
        h, c = self.encoder_model.predict(source, batch_size=256)
        token = np.full((len(source), 1), START, dtype=np.int32)
        decoded = []
        for _ in range(length):
            probabilities, h, c = self.step_model.predict([token, h, c], batch_size=256)
            token = probabilities[:, -1].argmax(axis=-1).astype(np.int32)[:, None]
            decoded.append(token[:, 0])
        return np.stack(decoded, axis=1)


def run(quick=True, seed=0, verbose=0):
    """Train with teacher forcing; return teacher-forced and greedy-decoding accuracies."""
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    source, decoder_input, target = make_data(rng, 1200 if quick else 6000)
    (s_train, d_train, t_train), (s_test, d_test, t_test) = split(
        [source, decoder_input, target], 0.2)
    net = Seq2Seq()
    net.training_model.compile(optimizers.Adam(0.01, clipnorm=1.0),
                               "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = net.training_model.fit([s_train, d_train], t_train, batch_size=32,
                                     epochs=14 if quick else 40, verbose=verbose)
    _, forced_accuracy = net.training_model.evaluate([s_test, d_test], t_test, verbose=0)
    decoded = net.greedy_decode(s_test)
    return {
        "teacher_forced_token_accuracy": float(forced_accuracy),
        "greedy_token_accuracy": float(np.mean(decoded == t_test)),
        "greedy_sequence_accuracy": float(np.mean(np.all(decoded == t_test, axis=1))),
        "first_loss": history.history["loss"][0],
        "last_loss": history.history["loss"][-1],
    }


def main(argv=None):
    """Command line: [--full] [--seed N] [--quiet] [--threads N]; returns the results."""
    return run_from_command_line(argv, __doc__, "seq2seq (encoder-decoder, teacher forcing + greedy decoding)", run)

if __name__ == "__main__":
    main()
