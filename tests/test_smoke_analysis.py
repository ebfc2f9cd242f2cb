from deepshield.inference.analysis import Detector


def test_astronaut_face_is_found_and_scored(detector: Detector, astronaut):
    result = detector.analyze_image(astronaut)
    assert len(result.faces) == 1
    x0, y0, x1, y1 = result.faces[0].box
    # The face lies around x 180-275, y 85-180 in the 512 x 512 photo.
    assert 150 < x0 < 200 and 250 < x1 < 300 and 60 < y0 < 110 and 160 < y1 < 210
    assert 0.0 <= result.faces[0].probability <= 1.0
    assert result.faces[0].heatmap.shape == (64, 64)


def test_video_is_sampled_and_tracked(detector: Detector, face_video):
    result = detector.analyze_video(face_video, frames=8)
    assert result.sampled_frames == 8
    assert len(result.tracks) == 1 and len(result.tracks[0].points) == 8
    assert [p.frame_index for p in result.tracks[0].points] == [1, 3, 6, 8, 11, 13, 16, 18]
