"""Publishing the fleet: OCPI 2.2.1 (the CPO side, for roaming platforms and eMSPs) and
DATEX II v3.7 AFIR feeds (for national access points).

Everything here but ``server``, ``push`` and ``live`` is pure: the status tables
(``status``), the OCPI objects (``locations``, ``tariffs``, ``sessions``), the command
mapping (``commands``), the DATEX II publications (``datex2``) and the Art. 20 check
(``afir``) are functions of the station inventory and the twins, called by ``twin ocpi``,
the tests and ``twin report afir`` alike.
"""
