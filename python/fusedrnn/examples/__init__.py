"""The four recurrent architectures of the study notes as small runnable examples.

Each module trains on a generated task in a few seconds and reports what it reached:

- ``many_to_one``: sentiment-like classification of padded token sequences
  (Embedding(mask_zero) -> LSTM -> Dense(sigmoid));
- ``one_to_many``: a whole sequence generated from one vector
  (Dense -> RepeatVector -> GRU(return_sequences) -> TimeDistributed(Dense));
- ``many_to_many``: one label per step on same-length (padded) sequences, masked loss
  (Embedding(mask_zero) -> LSTM(return_sequences) -> TimeDistributed(Dense));
- ``seq2seq``: encoder-decoder with different input and output lengths: the encoder LSTM's
  final states start the decoder LSTM; trained with teacher forcing, decoded greedily.

Run one with ``python -m fusedrnn.examples.NAME [--full] [--seed N] [--quiet] [--threads N]``; from
Python, ``fusedrnn.examples.NAME.run(quick=True)`` returns a dict of metrics.
"""

EXAMPLES = ("many_to_one", "one_to_many", "many_to_many", "seq2seq")

__all__ = ["EXAMPLES"]
