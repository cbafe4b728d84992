"""Scans as a user brings them: reading (NIfTI, NRRD, DICOM), geometry (every RAS/LPS flip), registration to the
template, intensity normalisation, the native-space pipeline to the model grid and back, scan checks, saliency.
"""
