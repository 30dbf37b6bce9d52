"""Exact certificates of piecewise-linear ReLU networks: minimal adversarial distances.

* :mod:`.geocert` — GeoCert (Jordan et al. 2019): a best-first search through linear regions
  (:mod:`.region_search` holds the state it shares with branch and bound; :mod:`.halfspace` the closed-form
  pruning; :mod:`.boundary_search` a cheap upper bound);
* :mod:`.branch` — branch and bound over ReLU splits on the triangle relaxation;
* :mod:`.mip` — the minimal distance as one mixed-integer program.
"""

__all__: list[str] = []
