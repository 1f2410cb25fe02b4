"""Hardware in the loop: drive a real station's rotator and radio for a scheduled pass.

``hamlib`` speaks Hamlib's network protocol to ``rotctld`` and ``rigctld``; ``rotator`` plans a
pass against the rotator's mechanical limits (overwind, flip); ``tracker`` runs the loops that
point the antenna and Doppler-correct the radio for one pass.
"""
