"""Third-party files (issue 17): every file of nibabel's test data and of pydicom-data, with its expected outcome.

Each file goes through the napari reader and ``softseg inspect`` (tests/third_party_corpus.py): ``open``,
``warn`` (opens, with a logged ``warning: FILE: ...``), ``refuse`` (one line naming the file) or
``decline`` (the reader does not claim it: gzipped DICOM, files without the DICM preamble, headers nibabel
cannot parse). No file may raise anything else. The pydicom-data rows are skipped when that test-only
package is not installed; a file the table does not list fails (a new package version adds files: add
their rows, after looking at what they are). ``python tests/third_party_corpus.py`` prints the table.
"""

from __future__ import annotations

import pytest
from third_party_corpus import corpus_files, corpus_folders, inspect_outcome, reader_outcome

#: (reader, inspect) per file. Comments say why where the outcome is not "it opens".
EXPECTED = {
    'nibabel/0.dcm': ('open', 'open'),
    'nibabel/1.dcm': ('open', 'open'),
    'nibabel/ADC_Map.PAR': ('decline', 'refuse'),  # PAR header inconsistent (nibabel refuses it too)
    'nibabel/ASL_3D_Multiecho.PAR': ('refuse', 'refuse'),
    'nibabel/DTI.PAR': ('refuse', 'refuse'),  # PAR whose .REC is not in the wheel: the line names the .REC
    'nibabel/DTIv40.PAR': ('refuse', 'refuse'),
    'nibabel/NA.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_cor_20APtrans_15RLrot_SENSE_15_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_cor_SENSE_8_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_sag_15AP_SENSE_13_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_sag_15FH_SENSE_12_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_sag_15RL_SENSE_11_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_sag_SENSE_7_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_tra_-30AP_10RL_20FH_SENSE_14_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_tra_15FH_SENSE_9_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_tra_15RL_SENSE_10_1.PAR': ('refuse', 'refuse'),
    'nibabel/Phantom_EPI_3mm_tra_SENSE_6_1.PAR': ('refuse', 'refuse'),
    'nibabel/R11_T2W_TSE.PAR': ('refuse', 'refuse'),
    'nibabel/T1.PAR': ('refuse', 'refuse'),
    'nibabel/T1_3echo_mag_real_imag_phase.PAR': ('refuse', 'refuse'),
    'nibabel/T1_dual_echo.PAR': ('refuse', 'refuse'),
    'nibabel/T2-interleaved.PAR': ('refuse', 'refuse'),
    'nibabel/T2.PAR': ('refuse', 'refuse'),
    'nibabel/T2_-interleaved.PAR': ('refuse', 'refuse'),
    'nibabel/T2_.PAR': ('refuse', 'refuse'),
    'nibabel/analyze.hdr': ('refuse', 'refuse'),  # header without its .img (not in the wheel): the line names analyze.img
    'nibabel/anatomical.nii': ('open', 'open'),
    'nibabel/bad_attribute+orig.HEAD': ('decline', 'refuse'),  # broken AFNI header (nibabel refuses it too)
    'nibabel/bad_datatype+orig.HEAD': ('decline', 'refuse'),
    'nibabel/example4d+orig.BRIK.gz': ('open', 'open'),
    'nibabel/example4d+orig.HEAD': ('open', 'open'),
    'nibabel/example4d.nii.gz': ('open', 'open'),
    'nibabel/example_nifti2.nii.gz': ('open', 'open'),
    'nibabel/fieldmap.PAR': ('refuse', 'refuse'),
    'nibabel/functional.nii': ('open', 'open'),
    'nibabel/minc1-no-att.mnc': ('open', 'open'),
    'nibabel/minc1_1_scale.mnc': ('open', 'open'),
    'nibabel/minc1_4d.mnc': ('open', 'open'),
    'nibabel/minc2-4d-d.mnc': ('refuse', 'refuse'),  # MINC2 needs h5py: the line says pip install h5py
    'nibabel/minc2-no-att.mnc': ('refuse', 'refuse'),
    'nibabel/minc2_1_scale.mnc': ('refuse', 'refuse'),
    'nibabel/minc2_4d.mnc': ('refuse', 'refuse'),
    'nibabel/minc2_baddim.mnc': ('refuse', 'refuse'),
    'nibabel/nifti1.hdr': ('refuse', 'refuse'),
    'nibabel/nifti2.hdr': ('refuse', 'refuse'),
    'nibabel/phantom_EPI_asc_CLEAR_2_1.PAR': ('open', 'open'),
    'nibabel/phantom_EPI_asc_CLEAR_2_1.REC': ('open', 'open'),
    'nibabel/phantom_fake_dualTR.PAR': ('refuse', 'refuse'),
    'nibabel/phantom_fake_v4.PAR': ('refuse', 'refuse'),
    'nibabel/phantom_fake_v4_1.PAR': ('refuse', 'refuse'),
    'nibabel/phantom_truncated.PAR': ('decline', 'refuse'),
    'nibabel/phantom_truncated.REC': ('decline', 'refuse'),
    'nibabel/phantom_varscale.PAR': ('open', 'open'),
    'nibabel/phantom_varscale.REC': ('open', 'open'),
    'nibabel/reoriented_anat_moved.nii': ('open', 'open'),
    'nibabel/resampled_anat_moved.nii': ('warn', 'warn'),  # 153 NaN outside the field of view: background, with the count
    'nibabel/row_major.dconn.nii': ('refuse', 'refuse'),  # CIFTI-2 connectivity matrix, not a volume
    'nibabel/scaled+tlrc.BRIK': ('open', 'open'),
    'nibabel/scaled+tlrc.HEAD': ('open', 'open'),
    'nibabel/small.mnc': ('refuse', 'refuse'),
    'nibabel/standard.nii.gz': ('open', 'open'),
    'nibabel/test.mgz': ('open', 'open'),
    'nibabel/tiny.mnc': ('open', 'open'),
    'nibabel/tinypet.v': ('decline', 'refuse'),  # ECAT: nibabel cannot tell its type from the name; not claimed
    'nibabel/umass_anonymized.PAR': ('refuse', 'refuse'),
    'nibabel/variant_v4_2_header.PAR': ('refuse', 'refuse'),
    'nibabel-nicom/0.dcm': ('open', 'open'),
    'nibabel-nicom/1.dcm': ('open', 'open'),
    'nibabel-nicom/csa_slice_norm.dcm': ('refuse', 'open'),  # MR header without pixel data
    'nibabel-nicom/decimal_rescale.dcm': ('open', 'open'),
    'nibabel-nicom/philips_mprage.dcm.gz': ('decline', 'refuse'),  # gzipped DICOM: not claimed
    'nibabel-nicom/siemens_dwi_0.dcm.gz': ('decline', 'refuse'),
    'nibabel-nicom/siemens_dwi_1000.dcm.gz': ('decline', 'refuse'),
    'nibabel-nicom/slicethickness_empty_string.dcm': ('open', 'open'),
    'pydicom-data/693_J2KR.dcm': ('open', 'open'),
    'pydicom-data/693_UNCI.dcm': ('open', 'open'),
    'pydicom-data/693_UNCR.dcm': ('open', 'open'),
    'pydicom-data/JPEG-LL.dcm': ('warn', 'open'),  # no patient geometry: axis-aligned at the pixel spacing, 1 mm slices
    'pydicom-data/JPEG2000_UNC.dcm': ('warn', 'open'),
    'pydicom-data/JPGLosslessP14SV1_1s_1f_8b.dcm': ('warn', 'open'),
    'pydicom-data/MR-SIEMENS-DICOM-WithOverlays.dcm': ('open', 'open'),
    'pydicom-data/MR2_J2KI.dcm': ('open', 'open'),
    'pydicom-data/MR2_J2KR.dcm': ('open', 'open'),
    'pydicom-data/MR2_UNCI.dcm': ('open', 'open'),
    'pydicom-data/MR2_UNCR.dcm': ('open', 'open'),
    'pydicom-data/OBXXXX1A.dcm': ('refuse', 'open'),  # colour (PALETTE COLOR): refused by the header check
    'pydicom-data/OBXXXX1A_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/OBXXXX1A_expb.dcm': ('refuse', 'open'),
    'pydicom-data/OBXXXX1A_expb_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/OBXXXX1A_rle.dcm': ('refuse', 'open'),
    'pydicom-data/OBXXXX1A_rle_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/OT-PAL-8-face.dcm': ('decline', 'refuse'),  # no DICM preamble: not claimed
    'pydicom-data/RG1_J2KI.dcm': ('warn', 'open'),
    'pydicom-data/RG1_J2KR.dcm': ('warn', 'open'),
    'pydicom-data/RG1_UNCI.dcm': ('warn', 'open'),
    'pydicom-data/RG1_UNCR.dcm': ('warn', 'open'),
    'pydicom-data/RG3_J2KI.dcm': ('warn', 'open'),
    'pydicom-data/RG3_J2KR.dcm': ('warn', 'open'),
    'pydicom-data/RG3_UNCI.dcm': ('warn', 'open'),
    'pydicom-data/RG3_UNCR.dcm': ('warn', 'open'),
    'pydicom-data/SC_rgb.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_16bit.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_16bit_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_32bit.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_32bit_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_dcmtk_ebcr_dcmd.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_dcmtk_ebcyn1_dcmd.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_dcmtk_ebcyn2_dcmd.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_dcmtk_ebcynp_dcmd.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_dcmtk_ebcys2_dcmd.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_dcmtk_ebcys4_dcmd.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_expb.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_expb_16bit.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_expb_16bit_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_expb_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_expb_32bit.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_expb_32bit_2frame.dcm': ('refuse', 'open'),
    'pydicom-data/SC_rgb_gdcm2k_uncompressed.dcm': ('refuse', 'open'),
    'pydicom-data/SC_ybr_full_uncompressed.dcm': ('refuse', 'open'),
    'pydicom-data/US1_J2KI.dcm': ('refuse', 'open'),
    'pydicom-data/US1_J2KR.dcm': ('refuse', 'open'),
    'pydicom-data/US1_UNCI.dcm': ('refuse', 'open'),
    'pydicom-data/US1_UNCR.dcm': ('refuse', 'open'),
    'pydicom-data/bad_sequence.dcm': ('open', 'open'),
    'pydicom-data/color-pl.dcm': ('refuse', 'open'),
    'pydicom-data/color-px.dcm': ('refuse', 'open'),
    'pydicom-data/color3d_jpeg_baseline.dcm': ('refuse', 'open'),
    'pydicom-data/eCT_Supplemental.dcm': ('open', 'open'),
    'pydicom-data/emri_small.dcm': ('warn', 'open'),
    'pydicom-data/emri_small_RLE.dcm': ('warn', 'open'),
    'pydicom-data/emri_small_big_endian.dcm': ('warn', 'open'),
    'pydicom-data/emri_small_jpeg_2k_lossless.dcm': ('warn', 'open'),
    'pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm': ('refuse', 'open'),  # truncated pixel data
    'pydicom-data/emri_small_jpeg_ls_lossless.dcm': ('warn', 'open'),
    'pydicom-data/explicit_VR-UN.dcm': ('open', 'open'),
    'pydicom-data/gdcm-US-ALOKA-16.dcm': ('refuse', 'open'),
    'pydicom-data/gdcm-US-ALOKA-16_big.dcm': ('refuse', 'open'),
    'pydicom-data/liver.dcm': ('refuse', 'open'),  # a SEG alone, without its image series
    'pydicom-data/liver_expb.dcm': ('refuse', 'open'),
    'pydicom-data/mlut_18.dcm': ('warn', 'open'),
    'pydicom-data/vlut_04.dcm': ('warn', 'open'),
}

FILES = dict(corpus_files())


def test_the_table_lists_every_installed_file():
    assert "nibabel" in corpus_folders()
    assert sorted(set(FILES) - set(EXPECTED)) == []


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_third_party_file(key):
    group = key.split("/", 1)[0]
    if group not in corpus_folders():
        pytest.skip(f"{group} is not installed (pip install pydicom-data)")
    path = FILES[key]
    if path.name.lower().endswith(".dcm"):
        pytest.importorskip("pydicom")  # the dicom extra (part of the test extra)
    want_reader, want_inspect = EXPECTED[key]
    outcome, text = reader_outcome(path)
    assert outcome == want_reader, text
    if outcome in ("refuse", "warn"):
        assert path.name in text, f"the line must name the file: {text}"
    outcome, text = inspect_outcome(path)
    assert outcome == want_inspect, text
    if outcome == "refuse":
        assert text.startswith("softseg: error: ") and path.name in text and "\n" not in text


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_napari_offers_the_reader_for_every_file_it_claims(key):
    """File ▸ Open and drag-and-drop go through the manifest's filename patterns before ``get_reader``: a
    file the reader claims must match them, or napari never asks it (an .mgz or .nrrd was 'no reader')."""
    from npe2 import PluginManager

    group = key.split("/", 1)[0]
    if group not in corpus_folders():
        pytest.skip(f"{group} is not installed (pip install pydicom-data)")
    path = FILES[key]
    if path.name.lower().endswith(".dcm"):
        pytest.importorskip("pydicom")
    if EXPECTED[key][0] == "decline":
        return                           # not claimed: napari may or may not ask, the reader says no
    manager = PluginManager.instance()
    manager.discover()                   # (a no-op once napari has discovered the plugins)
    offered = [reader.plugin_name for reader in manager.iter_compatible_readers([str(path)])]
    assert "napari-softseg" in offered, f"{path.name}: napari would not offer napari-softseg ({offered})"
