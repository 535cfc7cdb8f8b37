"""Greedy packing of length-sorted token-id rows into forward passes under a padded-token budget."""


def plan_passes(lengths, batch_size, token_budget):
    """Pack rows into forward passes greedily: the shortest rows first, each pass filled while its padded size
    (rows x longest row) stays within ``token_budget`` and it holds at most ``batch_size`` rows.

    A row longer than ``token_budget`` runs alone. With the rows sorted by length, greedy filling gives the
    fewest passes any split of the sorted order into runs can (a run that fits stays fitting when shortened).

    Args:
        lengths: sequence of int, the token count of each row (>= 1).
        batch_size: most rows per pass, int >= 1.
        token_budget: most padded tokens per pass, a number >= 1 (``math.inf`` for no limit).

    Returns:
        list of lists of int: indices into ``lengths``; each index exactly once, each pass in ascending length
        (ties in input order), passes in ascending length order.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    passes, current = [], []
    for i in order:
        grown = len(current) + 1
        if current and (grown > batch_size or grown * lengths[i] > token_budget):  # sorted: row i is the longest
            passes.append(current)
            current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes
